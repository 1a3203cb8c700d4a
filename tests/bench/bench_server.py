#!/usr/bin/env python3
"""Throughput of a real network server with a logpoint on its per-request path.

redis 7.0 from its Debian source package (`apt-get source redis`, cached in
~/.cache/nonstop-bench/redis), built with -O2 -g (MALLOC=libc, no TLS, no systemd),
serves redis-benchmark (from the same build) on 127.0.0.1. A logpoint capturing two
values, "{c->argc} {c->cmd->id}", sits at a mid-function line of call() in
src/server.c (`server.in_nested_call++;`, right before the command runs): call() runs
once per command, in the thread that executes commands.

Runs, each on a freshly started redis-server, side by side in one invocation:
untraced (before and after the others; their mean is the reference), nonstop
(`nonstop-stub --attach PID --stdio` driven over RSP from here, frames drained during
the load by bench_drain, the adapter's frame path in C), a bpftrace uprobe at the same address reading the same
two fields (printf + count; through a symbol added at the site in a copy of the
binary that every run uses, see site_binary), and gdb dprintf at the same address
(`gdb -p PID`).
Then interleaved (untraced, nonstop) pairs, and the logpoint switched on and off in one
server under one steady load (run_onoff: the precise measure, the machine's drift and
the differences between server processes cancel).
Each prints requests/s (redis-benchmark's own numbers, SET and GET), the loss against
untraced, the hits (commands executed while the tool was attached, from redis's own
INFO commandstats), what the tool captured and what it dropped. The issue's target
(< 1 % throughput loss) is printed beside nonstop's row; PASS/MISS is informational
and the script exits 0 whatever the numbers. Every run is bounded by a timeout.

usage: bench_server.py BUILD_DIR [--quick] [--only=untraced,nonstop,bpftrace,gdb]
                       [--pairs=N] [--logpoint=heap|static] [--onoff=SECONDS]"""
import math
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_hotloop import Rsp, define, x_act  # noqa: E402 (same RSP client as the hot loop)

QUICK = '--quick' in sys.argv
ONLY = [a.split('=', 1)[1].split(',') for a in sys.argv if a.startswith('--only=')]
# Interleaved (untraced, nonstop) pairs after the main rows: each pair's loss is judged
# against its own untraced run, so slow drift of the machine cancels out.
PAIRS = int(([a.split('=', 1)[1] for a in sys.argv if a.startswith('--pairs=')]
             or ['1' if QUICK else '6'])[0])
# Two-sided 95 % quantiles of Student's t for n - 1 degrees of freedom (n pairs).
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26,
       12: 2.20, 15: 2.14, 20: 2.09, 30: 2.05, 40: 2.02, 60: 2.00, 120: 1.98}


def mean_interval(xs):
    """Mean of @xs (two or more) and its two-sided 95 % interval (Student's t): (mean,
    low, high, sd)."""
    n = len(xs)
    mean = sum(xs) / n
    sd = (sum((x - mean) ** 2 for x in xs) / (n - 1)) ** 0.5
    half = T95[max(k for k in T95 if k <= n)] * sd / n ** 0.5
    return mean, mean - half, mean + half, sd


def median_interval(xs):
    """Median of @xs and its distribution-free 95 % interval (order statistics: the k-th
    smallest and the k-th largest, k the largest with P(Binomial(n, 1/2) < k) <= 2.5 %),
    which a few phases disturbed by something else on the machine cannot drag: (median,
    low, high), the interval None when @xs are too few (n < 6)."""
    xs, n = sorted(xs), len(xs)
    med = (xs[(n - 1) // 2] + xs[n // 2]) / 2
    k, below = 0, 0.0
    while below + math.comb(n, k) / 2 ** n <= 0.025:
        below += math.comb(n, k) / 2 ** n
        k += 1
    return (med, xs[k - 1], xs[n - k]) if k > 0 else (med, None, None)


def verdict(lo, hi):
    """The target is met only if the whole 95 % interval is under it."""
    return ('PASS' if hi < TARGET_LOSS else 'MISS' if lo >= TARGET_LOSS else
            'not shown: the interval spans it')


def bpf_reg(n):
    """bpftrace's name for GDB's amd64 register @n (pt_regs' names: bx, not rbx)."""
    r = GDB_REGS[n]
    return r[1:] if r[0] == 'r' and not r[1].isdigit() else r


def want(run_name):
    return not ONLY or run_name in ONLY[0]


ARGS = [a for a in sys.argv[1:] if not a.startswith('--')]
BUILD = os.path.abspath(ARGS[0] if ARGS else os.path.join(HERE, '..', '..', 'build'))
STUB = os.path.join(BUILD, 'bin', 'nonstop-stub')
AGENT = os.path.join(BUILD, 'lib', 'libnonstop-agent.so')
DRAIN = os.path.join(BUILD, 'bin', 'bench_drain')  # the adapter's frame reading, in C
CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'nonstop-bench', 'redis')

# Requests per test (redis-benchmark -n, for SET and for GET each). gdb dprintf stops
# the server at every command (a few hundred us each): fewer requests there.
REQ = 50000 if QUICK else 200000
REQ_GDB = 2000 if QUICK else 5000
CLIENTS = 50
TIMEOUT = 120  # seconds per benchmark run: a bound, not an expectation
TARGET_LOSS = 1.0  # percent (issue 5)
# The on/off run (run_onoff): its length (--onoff=SECONDS, 0: none), each phase's
# measured span and the wait after each switch before it.
ONOFF = float(([a.split('=', 1)[1] for a in sys.argv if a.startswith('--onoff=')]
               or ['10' if QUICK else '120'])[0])
ONOFF_PHASE, ONOFF_SETTLE = 0.5, 0.1

DPRINTF = {'heap': '"dp %d %d\\n",c->argc,c->cmd->id',
           'static': '"dp %d %lld\\n",flags,server.stat_numcommands'}

# The site: the first line of call() that holds this text.
SITE_FUNC, SITE_TEXT = 'call', 'server.in_nested_call++;'
# The logpoint (--logpoint=heap, the default): two members read through c, on the
# heap. --logpoint=static: a register and a global ({flags} {server.stat_numcommands}),
# reads that need no probe of possibly unmapped memory (no rt_sigprocmask in the hit):
# what the tier costs there when nothing is read through a pointer.
KIND = ([a.split('=', 1)[1] for a in sys.argv if a.startswith('--logpoint=')] or ['heap'])[0]
LOGPOINTS = {'heap': '{c->argc} {c->cmd->id}', 'static': '{flags} {server.stat_numcommands}'}
if KIND not in LOGPOINTS:
    sys.exit('bench_server: --logpoint is heap or static')
LOGPOINT = LOGPOINTS[KIND]
SITE_SYM = 'ns_logpoint_site'  # added to a copy of the binary for bpftrace (site_binary)

# Agent-expression opcodes (GDB manual, "Agent Expressions"); multi-byte operands are
# big-endian.
OP_ADD, OP_TRACE_QUICK, OP_REF32, OP_REF64 = 0x02, 0x0d, 0x19, 0x1a
OP_EXT, OP_CONST16, OP_CONST64, OP_REG, OP_END = 0x16, 0x23, 0x25, 0x26, 0x27
GDB_REGS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp'] + \
    ['r%d' % i for i in range(8, 16)]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, timeout=600, **kw):
    """(returncode, combined output); returncode None on timeout or exec failure."""
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=timeout, **kw)
        return r.returncode, r.stdout.decode(errors='replace')
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b'').decode(errors='replace') + '\n(timed out)'
    except OSError as e:
        return None, str(e)


def tail(text, n=3):
    lines = [x.strip() for x in (text or '').strip().splitlines() if x.strip()]
    return ' | '.join(lines[-n:])


# ---------------------------------------------------------------- fetch and build

def add_deb_src():
    """A deb-src entry for `apt-get source` (as root), like scripts/bench.sh."""
    if subprocess.run(['grep', '-rqsE', r'^(deb-src|Types:.*deb-src)', '/etc/apt/sources.list',
                       '/etc/apt/sources.list.d/']).returncode == 0:
        return None
    if os.geteuid() != 0:
        return 'no deb-src entry in /etc/apt and not root to add one'
    if os.path.exists('/etc/apt/sources.list.d/debian.sources'):
        text = open('/etc/apt/sources.list.d/debian.sources').read()
        with open('/etc/apt/sources.list.d/nonstop-bench-src.sources', 'w') as f:
            f.write(re.sub(r'^Types: deb$', 'Types: deb-src', text, flags=re.M))
    elif os.path.exists('/etc/apt/sources.list'):
        lines = [ln.replace('deb ', 'deb-src ', 1) for ln in open('/etc/apt/sources.list')
                 if ln.startswith('deb ')]
        with open('/etc/apt/sources.list.d/nonstop-bench-src.list', 'w') as f:
            f.writelines(lines)
    else:
        return 'no apt sources to derive a deb-src entry from'
    run(['apt-get', 'update', '-qq'], timeout=300)
    return None


def redis_tree():
    for d in sorted(os.listdir(CACHE)) if os.path.isdir(CACHE) else []:
        p = os.path.join(CACHE, d)
        if d.startswith('redis-') and os.path.isfile(os.path.join(p, 'src', 'server.c')):
            return p
    return None


def fetch_and_build():
    """(source tree, None) or (None, why not)."""
    tree = redis_tree()
    if tree is None:
        why = add_deb_src()
        if why:
            return None, why
        if not shutil.which('dpkg-source'):
            if os.geteuid() == 0:
                run(['apt-get', 'install', '-y', '-qq', 'dpkg-dev'], timeout=300)
            if not shutil.which('dpkg-source'):
                return None, 'dpkg-source missing (apt-get install dpkg-dev)'
        os.makedirs(CACHE, exist_ok=True)
        log('apt-get source redis (into %s)...' % CACHE)
        rc, out = run(['apt-get', 'source', 'redis'], timeout=600, cwd=CACHE)
        tree = redis_tree()
        if tree is None:
            return None, 'apt-get source redis failed: ' + tail(out)
    src = os.path.join(tree, 'src')
    if all(os.path.exists(os.path.join(src, b)) for b in ('redis-server', 'redis-benchmark')):
        return tree, None
    missing = [t for t in ('make', 'gcc') if not shutil.which(t)]
    if missing and os.geteuid() == 0:
        run(['apt-get', 'install', '-y', '-qq', 'make', 'gcc', 'libc6-dev'], timeout=600)
        missing = [t for t in ('make', 'gcc') if not shutil.which(t)]
    if missing:
        return None, 'build tools missing: ' + ' '.join(missing)
    # The bundled deps (hiredis, lua, hdr_histogram, linenoise) are in the tree; libc
    # malloc avoids jemalloc. OPTIMIZATION=-O2 (no LTO); the Makefile adds -g -ggdb.
    log('building redis-server and redis-benchmark (-O2 -g, make -j2)...')
    rc, out = run(['make', '-j2', 'MALLOC=libc', 'USE_SYSTEMD=no', 'BUILD_TLS=no',
                   'OPTIMIZATION=-O2', 'redis-server', 'redis-benchmark'], timeout=1800,
                  cwd=src)
    if rc != 0:
        return None, 'make failed: ' + tail(out)
    return tree, None


# ---------------------------------------------------------------- the site

def nm_syms(path):
    out = subprocess.run(['nm', '-S', path], capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in 'Tt':
            syms[f[3]] = (int(f[0], 16), int(f[1], 16))
    return syms


def find_site(tree, server):
    """The logpoint's line, its link-time address, the register holding c there and the
    member offsets, all from the source and from gdb (independent of nonstop)."""
    lines = open(os.path.join(tree, 'src', 'server.c'), errors='replace').read().splitlines()
    start = next((i for i, ln in enumerate(lines)
                  if re.match(r'void %s\(client \*c, int flags\) \{' % SITE_FUNC, ln)), None)
    if start is None:
        return None, 'no %s() in server.c' % SITE_FUNC
    line = next((i + 1 for i in range(start, len(lines)) if SITE_TEXT in lines[i]), None)
    if line is None:
        return None, 'no "%s" in %s()' % (SITE_TEXT, SITE_FUNC)
    rc, out = run(['gdb', '-batch', '-nx', '-ex', 'info line server.c:%d' % line,
                   '-ex', 'maint agent-eval -at server.c:%d, c' % line,
                   '-ex', 'print &((client *)0)->argc', '-ex', 'print &((client *)0)->cmd',
                   '-ex', 'print &((struct redisCommand *)0)->id',
                   '-ex', 'print sizeof(((client *)0)->argc)',
                   '-ex', 'print sizeof(((struct redisCommand *)0)->id)',
                   '-ex', 'maint agent-eval -at server.c:%d, flags' % line,
                   '-ex', 'print &server.stat_numcommands',
                   '-ex', 'print sizeof(server.stat_numcommands)', server], timeout=120)
    m = re.search(r'starts at address (0x[0-9a-f]+) <(\w+)\+(\d+)>', out)
    regs = re.findall(r'^\s*\d+\s+reg (\d+)$', out, re.M)
    offs = [int(x, 16) for x in re.findall(r'\$\d+ = \([^)]*\) (0x[0-9a-f]+)', out)]
    sizes = [int(x) for x in re.findall(r'^\$\d+ = (\d+)$', out, re.M)]
    if (not m or m.group(2) != SITE_FUNC or len(regs) != 2 or len(offs) != 4
            or sizes != [4, 4, 8]):
        return None, 'gdb could not describe the site: ' + tail(out, 6)
    syms = nm_syms(server)
    return {'line': line, 'text': lines[line - 1].strip(), 'addr': int(m.group(1), 16),
            'off': int(m.group(3)), 'reg': int(regs[0]), 'argc': offs[0], 'cmd': offs[1],
            'id': offs[2], 'flags_reg': int(regs[1]), 'numcmds': offs[3],
            'func': syms[SITE_FUNC],
            'cold': syms.get(SITE_FUNC + '.cold')}, None


def set_symbol_size(path, name, size):
    """Set st_size of symbol @name in the ELF64 .symtab of @path (objcopy --add-symbol
    cannot)."""
    import struct
    data = bytearray(open(path, 'rb').read())
    shoff, = struct.unpack_from('<Q', data, 0x28)
    shentsize, shnum = struct.unpack_from('<HH', data, 0x3a)
    secs = [struct.unpack_from('<IIQQQQIIQQ', data, shoff + i * shentsize) for i in range(shnum)]
    for sec in secs:
        if sec[1] != 2:  # SHT_SYMTAB
            continue
        strtab = secs[sec[6]]
        for off in range(sec[4], sec[4] + sec[5], 24):
            so = strtab[4] + struct.unpack_from('<I', data, off)[0]
            if data[so:data.index(b'\0', so)] == name.encode():
                struct.pack_into('<Q', data, off + 16, size)
                with open(path, 'wb') as f:
                    f.write(data)
                return True
    return False


def site_binary(server, site, tmp):
    """A copy of redis-server with one more symbol, SITE_SYM, at the logpoint's address
    (sized to the end of the function). Debian's bpftrace 0.17 is built without uprobe
    offset support and refuses func+off probes ("Can't check if uprobe is in proper
    place"); a symbol at the site lets it probe there at offset 0. Only .symtab
    changes (checked: same .text bytes), and every run uses this copy."""
    out = os.path.join(tmp, 'redis-server')
    text = subprocess.run(['readelf', '-SW', server], capture_output=True, text=True).stdout
    m = re.search(r'\]\s+\.text\s+PROGBITS\s+([0-9a-f]+)', text)
    if not m or not shutil.which('objcopy'):
        return server, 'no .text in readelf output or no objcopy'
    rel = site['addr'] - int(m.group(1), 16)
    rc, o = run(['objcopy', '--add-symbol', '%s=.text:%#x,global,function' % (SITE_SYM, rel),
                 server, out])
    if rc != 0:
        return server, 'objcopy: ' + tail(o)
    fa, fs = site['func']
    if not set_symbol_size(out, SITE_SYM, fa + fs - site['addr']):
        return server, 'could not size the added symbol'
    same = subprocess.run('cmp -s <(objcopy -O binary -j .text %s /dev/stdout) '
                          '<(objcopy -O binary -j .text %s /dev/stdout)' % (server, out),
                          shell=True, executable='/bin/bash').returncode == 0
    if not same or nm_syms(out).get(SITE_SYM, (0,))[0] != site['addr']:
        return server, 'the copy with the added symbol differs'
    os.chmod(out, 0o755)
    return out, None


def ax_global(addr):
    """Collect bytecode for a 64-bit global at runtime address @addr (traced, then its
    value), as gdb emits it for a global in a running PIE."""
    return bytes([OP_CONST64]) + addr.to_bytes(8, 'big') + bytes([OP_TRACE_QUICK, 8, OP_REF64,
                                                               OP_END])


def ax_field(reg, offs):
    """Collect bytecode for reg->f0->f1...: the member loads are recorded (trace_quick),
    the last one is the int value; like nonstop-dap's COLLECT programs (and gdb's)."""
    code = bytes([OP_REG, 0, reg])
    for i, off in enumerate(offs):
        last = i + 1 == len(offs)
        code += bytes([OP_CONST16]) + off.to_bytes(2, 'big') + bytes([OP_ADD])
        code += bytes([OP_TRACE_QUICK, 4 if last else 8, OP_REF32 if last else OP_REF64])
    return code + bytes([OP_EXT, 32, OP_END])


# ---------------------------------------------------------------- redis plumbing

def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def resp(port, *args, timeout=5.0):
    """One command over RESP; the raw reply as text."""
    msg = b'*%d\r\n' % len(args) + b''.join(b'$%d\r\n%s\r\n' % (len(a.encode()), a.encode())
                                            for a in args)
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
        s.sendall(msg)
        data = b''
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
            if data.startswith(b'$'):
                n = int(data[1:data.index(b'\r\n')])
                if n < 0 or len(data) >= data.index(b'\r\n') + 2 + n + 2:
                    break
            elif data.endswith(b'\r\n'):
                break
    return data.decode(errors='replace')


class Server:
    def __init__(self, server_bin, tmp):
        self.port = free_port()
        self.p = subprocess.Popen(
            [server_bin, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
             '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning',
             '--dir', tmp], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self.pid = self.p.pid
        deadline = time.monotonic() + 10
        while True:
            try:
                if resp(self.port, 'PING').startswith('+PONG'):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.p.poll() is not None:
                self.stop()
                raise RuntimeError('redis-server did not start')
            time.sleep(0.05)

    def reset_stats(self):
        resp(self.port, 'CONFIG', 'RESETSTAT')

    def calls(self):
        """Commands executed since CONFIG RESETSTAT (redis's own count, not counting
        the RESETSTAT itself)."""
        text = resp(self.port, 'INFO', 'commandstats')
        n = 0
        for name, c in re.findall(r'^cmdstat_([^:]+):calls=(\d+)', text, re.M):
            if name != 'config|resetstat':
                n += int(c)
        return n

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def bench_cmd(bench_bin, port, n):
    return [bench_bin, '-h', '127.0.0.1', '-p', str(port), '-t', 'set,get', '-n', str(n),
            '-c', str(CLIENTS), '--csv']


def parse_bench(out):
    """{'SET': rps, 'GET': rps} from redis-benchmark --csv."""
    rps = {}
    for name, v in re.findall(r'^"(SET|GET)","([0-9.]+)"', out or '', re.M):
        rps[name] = float(v)
    return rps if len(rps) == 2 else None


def load_generator(bench_bin, port, n):
    return subprocess.Popen(bench_cmd(bench_bin, port, n), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(gen, deadline):
    """Wait for the load generator; its rps or an error text."""
    try:
        out, _ = gen.communicate(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        gen.kill()
        gen.communicate()
        return None, 'redis-benchmark timed out after %d s' % TIMEOUT
    rps = parse_bench(out.decode(errors='replace'))
    return (rps, None) if rps else (None, 'redis-benchmark: ' + tail(out.decode(errors='replace')))


# ---------------------------------------------------------------- the runs

def load_base(pid, path):
    real = os.path.realpath(path)
    for ln in open('/proc/%d/maps' % pid):
        f = ln.split()
        if len(f) >= 6 and f[5] == real and int(f[2], 16) == 0:
            return int(f[0].split('-')[0], 16)
    raise RuntimeError('no mapping of %s in /proc/%d/maps' % (real, pid))


def site_byte(pid, addr):
    """What the code at the site starts with, read through /proc (independent of the
    stub): int3, jmp (a jump pad) or the original byte."""
    try:
        with open('/proc/%d/mem' % pid, 'rb') as f:
            f.seek(addr)
            b = f.read(1)[0]
        return {0xcc: 'int3', 0xe9: 'jmp'}.get(b, '%02x' % b)
    except (OSError, IndexError, ValueError):
        return '?'


def cpu_s(pid, which=(11, 12)):
    """CPU time (user + system by default; (11,) user, (12,) system; every thread) of
    process @pid so far, in seconds."""
    try:
        f = open('/proc/%d/stat' % pid).read().rsplit(')', 1)[1].split()
        return sum(int(f[i]) for i in which) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return None


def threads_cpu_s(pid, comm=None):
    """CPU seconds (user + system) of @pid's threads, or of those named @comm only; 0
    when there is none."""
    total_s = 0.0
    try:
        tids = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return 0.0
    for tid in tids:
        try:
            stat = open('/proc/%d/task/%s/stat' % (pid, tid)).read()
        except OSError:
            continue
        name, rest = stat.split('(', 1)[1].rsplit(')', 1)
        if comm is not None and name != comm:
            continue
        try:  # nanoseconds on the CPU (stat's ticks are 10 ms: too coarse for this)
            total_s += int(open('/proc/%d/task/%s/schedstat' % (pid, tid)).read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            f = rest.split()
            total_s += (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
    return total_s


def agent_thread_cpu_s(pid):
    """CPU seconds of the agent's control thread in @pid (core/agent/agent.h
    NS_AGENT_THREAD_NAME): the warmer, the table of mappings, the ticks."""
    return threads_cpu_s(pid, 'nonstop-agent')


class CpuMeter:
    """CPU seconds spent by the server and by the tool's processes (and this script,
    when it is the tool's client) between start() and stop()."""

    def __init__(self, server_pid, tool_pids=(), self_too=False):
        self.pids = [server_pid] + list(tool_pids)
        self.self_too = self_too

    def start(self):
        self.t0 = [cpu_s(p) for p in self.pids]
        self.u0 = cpu_s(self.pids[0], (11,))
        self.a0 = agent_thread_cpu_s(self.pids[0])
        self.s0 = time.process_time()

    def stop(self, res, n):
        t1 = [cpu_s(p) for p in self.pids]
        d = [None if a is None or b is None else b - a for a, b in zip(self.t0, t1)]
        res['srv_cpu'] = None if d[0] is None else d[0] * 1e6 / n
        u1 = cpu_s(self.pids[0], (11,))
        res['srv_agent'] = (agent_thread_cpu_s(self.pids[0]) - self.a0) * 1e6 / n
        res['srv_usr'] = None if u1 is None or self.u0 is None else (u1 - self.u0) * 1e6 / n
        tool = [x for x in d[1:] if x is not None]
        res['tool_parts'] = [x * 1e6 / n for x in tool]
        if self.self_too:
            tool.append(time.process_time() - self.s0)
            res['tool_parts'].append(tool[-1] * 1e6 / n)
        res['tool_cpu'] = sum(tool) * 1e6 / n if tool else None


def run_untraced(bins, tmp, n):
    srv = Server(bins['server'], tmp)
    try:
        srv.reset_stats()
        cpu = CpuMeter(srv.pid)
        cpu.start()
        rps, err = finish(load_generator(bins['bench'], srv.port, n), time.monotonic() + TIMEOUT)
        if err:
            return {'error': err}
        res = {'rps': rps}
        cpu.stop(res, 2 * n)
        res['hits'] = srv.calls()
        return res
    finally:
        srv.stop()


def tear_down(helpers, stub, errf, srv):
    """Whatever is still running after a nonstop run, last the server: @helpers killed,
    the stub asked to end (then killed)."""
    for p in helpers:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
    if stub is not None and stub.poll() is None:
        stub.terminate()
        try:
            stub.wait(10)
        except subprocess.TimeoutExpired:
            stub.kill()
            stub.wait()
    errf.close()
    srv.stop()


def start_logpoint(srv, bins, site, errf):
    """Attach nonstop-stub to @srv, set the logpoint as tracepoint 1 and start tracing:
    (stub, its Rsp, load base, site address, {'tier', 'reason', 'site'} or {'error'})."""
    base = load_base(srv.pid, bins['server'])
    addr = base + site['addr']
    stub = subprocess.Popen([STUB, '--attach', str(srv.pid), '--stdio', '--agent', AGENT],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf)
    rsp = Rsp(stub)
    rsp.handshake(binary=True)
    rsp.cmd('QTinit')
    rs = [site['func']] + ([site['cold']] if site['cold'] else [])
    ranges = ':R' + ','.join('%x-%x' % (base + a, base + a + s) for a, s in rs)
    # The R mask nonstop-dap sends for this logpoint: the registers it reads.
    if KIND == 'heap':
        acts = ['R%x' % (1 << site['reg']), x_act(ax_field(site['reg'], [site['argc']])),
                x_act(ax_field(site['reg'], [site['cmd'], site['id']]))]
    else:  # flags from the register block, the global through its runtime address
        acts = ['R%x' % (1 << site['flags_reg']), x_act(ax_global(base + site['numcmds']))]
    err = define(rsp, 1, addr, ranges, None, acts)
    if err:
        return stub, rsp, base, addr, {'error': 'QTDP refused: ' + err}
    r = rsp.cmd('QTStart')
    if r != b'OK':
        return stub, rsp, base, addr, {'error': 'QTStart: ' + r.decode(errors='replace')}
    info = dict(x.split('=', 1) for x in rsp.cmd('qNsTPInfo:1').decode().split(';')
                if '=' in x)
    res = {'tier': info.get('tier', '?'),
           'reason': bytes.fromhex(info.get('reason', '')).decode(errors='replace'),
           'site': site_byte(srv.pid, addr)}
    return stub, rsp, base, addr, res


def run_nonstop(bins, tmp, site, n):
    if not all(os.path.exists(x) for x in (STUB, AGENT, DRAIN)):
        return {'error': 'not available: build nonstop-stub, nonstop-agent and bench_drain '
                         'in %s' % BUILD}
    srv = Server(bins['server'], tmp)
    stub = drain = None
    errf = open(os.path.join(tmp, 'stub.err'), 'w+')
    try:
        srv.reset_stats()
        stub, rsp, base, addr, res = start_logpoint(srv, bins, site, errf)
        if 'error' in res:
            return res
        # The frames go to bench_drain (what nonstop-dap does with them short of
        # formatting: wait for the push, qNsFrames until OK, parse every frame), on
        # this script's connection, handed over until the load is done.
        out = os.path.join(tmp, 'drain.out')
        drain = subprocess.Popen([DRAIN, out, '2000'], stdin=stub.stdout, stdout=stub.stdin)
        deadline = time.monotonic() + TIMEOUT
        cpu = CpuMeter(srv.pid, [stub.pid, drain.pid])
        cpu.start()
        rps, err = finish(load_generator(bins['bench'], srv.port, n), deadline)
        time.sleep(0.3)  # the last hits' frames: the stub drains its rings every 5 ms
        cpu.stop(res, 2 * n)
        drain.send_signal(signal.SIGTERM)
        drain.wait(15)
        lines = open(out).read().splitlines()
        drained = dict(line.split(' ', 1) for line in lines if not line.startswith('frame '))
        frames, drops = int(drained.get('frames', 0)), int(drained.get('dropped', 0))
        if drain.returncode or int(drained.get('bad', 0)):
            err = err or 'bench_drain: exit %s, %s bad frames' % (drain.returncode,
                                                                  drained.get('bad'))
        seen = {}
        for line in lines:
            if line.startswith('frame '):
                try:
                    v = frame_values(bytes.fromhex(line[6:]), site, base)
                except (ValueError, IndexError):
                    v = None
                seen[v] = seen.get(v, 0) + 1
        st = rsp.cmd('qTStatus').decode(errors='replace')
        m = re.search(r'ns_dropped:([0-9a-f]+)', st)
        if m:
            drops = max(drops, int(m.group(1), 16))
        rsp.cmd('D')
        stub.stdin.close()
        stub.wait(15)
        errf.seek(0)
        m = re.search(r'attached to \d+ in ([0-9.]+ ms)', errf.read())
        attach = 'attach pause %s; ' % m.group(1) if m else ''
        if err:
            res['error'] = err
            return res
        res.update(rps=rps, hits=srv.calls(), frames=frames, dropped=drops)
        parts = res.get('tool_parts', [])
        cpu = ('stub %.2f us/req, bench_drain %.2f us/req; ' % tuple(parts)
               if len(parts) == 2 else '')
        cpu += 'the agent\'s thread in the server %.2f us/req; ' % res.get('srv_agent', 0)
        m = re.search(r'record (?:inline|not inline: [^;)]*)', res['reason'])
        rec = m.group(0) + '; ' if m else ''
        res['note'] = (attach + rec + cpu + 'values decoded from sampled frames: '
                       + values_text(seen))
        return res
    except (TimeoutError, EOFError, BrokenPipeError, RuntimeError, OSError) as e:
        errf.seek(0)
        return {'error': '%s (%s)' % (e, tail(errf.read(), 2))}
    finally:
        tear_down((drain,), stub, errf, srv)


def commands_done(port):
    """Commands the server has executed since it started (INFO stats)."""
    m = re.search(r'^total_commands_processed:(\d+)', resp(port, 'INFO', 'stats'), re.M)
    if not m:
        raise RuntimeError('no total_commands_processed in INFO stats')
    return int(m.group(1))


def run_onoff(bins, tmp, site, seconds):
    """The logpoint switched on and off (QTEnable/QTDisable: the site's code patched and
    restored) every ONOFF_PHASE s in one server under one steady load, the phases of each
    pair in alternating order: each pair's loss is the on phase's commands/s against
    the off phase's, a second apart, so the machine's drift and the differences between
    server processes (layout, placement) cancel. Both phases run with nonstop attached;
    what that costs with no tracepoint set is the agent's thread (its CPU is printed)."""
    if not all(os.path.exists(x) for x in (STUB, AGENT, DRAIN)):
        return {'error': 'not available: build nonstop-stub, nonstop-agent and bench_drain '
                         'in %s' % BUILD}
    srv = Server(bins['server'], tmp)
    stub = drain = gen = None
    errf = open(os.path.join(tmp, 'stub.err'), 'w+')
    ctl, ctl_child = socket.socketpair()
    try:
        stub, rsp, base, addr, res = start_logpoint(srv, bins, site, errf)
        if 'error' in res:
            return res
        if res['tier'] != 'jump':
            return dict(res, error='the site is not on the jump pad: %s' % res['reason'])
        orig = site_byte(srv.pid, addr) if rsp.cmd('QTDisable:1:%x' % addr) == b'OK' else None
        out = os.path.join(tmp, 'drain.out')
        drain = subprocess.Popen([DRAIN, out, '0', str(ctl_child.fileno())], stdin=stub.stdout,
                                 stdout=stub.stdin, pass_fds=[ctl_child.fileno()])
        ctl_child.close()
        ctl.settimeout(30)
        ctl_file = ctl.makefile('rw')

        def switch(on):
            ctl_file.write('QT%sable:1:%x\n' % ('En' if on else 'Dis', addr))
            ctl_file.flush()
            r = ctl_file.readline().strip()
            if r != 'OK':
                raise RuntimeError('QT%sable: %s' % ('En' if on else 'Dis', r or 'no reply'))
            got = site_byte(srv.pid, addr)
            if got != ('jmp' if on else orig):  # checked through /proc, not the stub
                raise RuntimeError('the site shows %s with the logpoint %s'
                                   % (got, 'on' if on else 'off'))

        # One redis-benchmark test for the whole run: no reconnects between tests.
        gen = subprocess.Popen([bins['bench'], '-h', '127.0.0.1', '-p', str(srv.port), '-t',
                                'set', '-n', '1000000000', '-c', str(CLIENTS), '-q'],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # clients connected, the server warm
        loss, cpu, agent, spans, on_cmds, tool = [], [], 0.0, 0.0, 0, {False: 0.0, True: 0.0}

        def tool_cpu():
            return threads_cpu_s(stub.pid) + threads_cpu_s(drain.pid)

        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end or i < 2:
            got = {}
            for on in (False, True) if i % 2 == 0 else (True, False):
                switch(on)
                time.sleep(ONOFF_SETTLE)
                c0, t0, u0 = commands_done(srv.port), time.monotonic(), threads_cpu_s(srv.pid)
                a0, k0 = agent_thread_cpu_s(srv.pid), tool_cpu()
                time.sleep(ONOFF_PHASE)
                c1, t1, u1 = commands_done(srv.port), time.monotonic(), threads_cpu_s(srv.pid)
                agent += agent_thread_cpu_s(srv.pid) - a0
                tool[on] += tool_cpu() - k0
                spans += t1 - t0
                got[on] = ((c1 - c0) / (t1 - t0), (u1 - u0) * 1e6 / max(1, c1 - c0))
                on_cmds += (c1 - c0) if on else 0
            if gen.poll() is not None:
                raise RuntimeError('redis-benchmark ended early')
            loss.append((1 - got[True][0] / got[False][0]) * 100)
            log('on/off pair %d: off %.0f on %.0f cmd/s, loss %.1f%%, CPU %+.2f us/cmd'
                % (i + 1, got[False][0], got[True][0], loss[-1], got[True][1] - got[False][1]))
            cpu.append((got[True][1] - got[False][1], got[False][1], got[False][0]))
            i += 1
        switch(False)
        gen.kill()
        gen.wait()
        time.sleep(0.3)
        drain.send_signal(signal.SIGTERM)
        drain.wait(15)
        drained = dict(line.split(' ', 1) for line in open(out).read().splitlines()
                       if ' ' in line)
        st = rsp.cmd('qTStatus').decode(errors='replace')
        m = re.search(r'ns_dropped:([0-9a-f]+)', st)
        drops = max(int(drained.get('dropped', 0)), int(m.group(1), 16) if m else 0)
        rsp.cmd('D')
        stub.stdin.close()
        stub.wait(15)
        res.update(loss=loss, cpu=cpu, agent_ms_s=agent * 1e3 / max(spans, 1e-9),
                   tool_ms_s={k: v * 2e3 / max(spans, 1e-9) for k, v in tool.items()},
                   frames=int(drained.get('frames', 0)), dropped=drops, on_cmds=on_cmds,
                   bad=int(drained.get('bad', 0)))
        return res
    except (TimeoutError, EOFError, BrokenPipeError, RuntimeError, OSError) as e:
        errf.seek(0)
        return {'error': '%s (%s)' % (e, tail(errf.read(), 2))}
    finally:
        ctl.close()
        tear_down((gen, drain), stub, errf, srv)


def frame_values(frame, site, base):
    """Decode one frame (core/frame/frame.h: header, then blocks of type, len, addr and
    payload padded to 8) and read the logpoint's two values from it by hand: c from
    the register block, then c->argc, c->cmd and c->cmd->id from the memory blocks
    (--logpoint=static: flags from the register block, server.stat_numcommands from
    the memory block at its runtime address). None if they are not all there."""
    import struct
    hdr_size, size = struct.unpack_from('<HI', frame, 6)
    regs, mem, off = None, {}, hdr_size
    while off + 16 <= min(size, len(frame)):
        typ, ln, addr = struct.unpack_from('<B3xIQ', frame, off)
        payload = frame[off + 16:off + 16 + ln]
        if typ == ord('R'):
            regs = struct.unpack_from('<%dQ' % (ln // 8), payload)
        elif typ == ord('r'):  # a mask, then the registers it names, in order
            mask, = struct.unpack_from('<Q', payload)
            vals = struct.unpack_from('<%dQ' % (ln // 8 - 1), payload, 8)
            regs = [None] * 64
            for i, n in enumerate(k for k in range(64) if mask >> k & 1):
                regs[n] = vals[i]
        elif typ == ord('M'):
            mem[addr] = payload
        off += 16 + (ln + 7) // 8 * 8

    def read(addr, n):
        for a, b in mem.items():
            if a <= addr and addr + n <= a + len(b):
                return int.from_bytes(b[addr - a:addr - a + n], 'little')
        return None
    if KIND == 'static':
        if regs is None or site['flags_reg'] >= len(regs) or regs[site['flags_reg']] is None:
            return None
        n = read(base + site['numcmds'], 8)
        flags = regs[site['flags_reg']] & 0xffffffff
        return None if n is None else (flags - (flags >> 31 << 32), n)
    if regs is None or site['reg'] >= len(regs) or regs[site['reg']] is None:
        return None
    c = regs[site['reg']]
    argc, cmd = read(c + site['argc'], 4), read(c + site['cmd'], 8)
    cid = read(cmd + site['id'], 4) if cmd is not None else None
    return None if argc is None or cid is None else (argc, cid)


def pairs(seen):
    """'argc 3 id 115: 40, ...' of the sampled values."""
    return ', '.join('%s: %d' % ('argc %d id %d' % k if k else 'undecodable', v)
                     for k, v in sorted(seen.items(), key=lambda kv: -kv[1])[:4])


def static_values(seen):
    """'flags 0: 2000; server.stat_numcommands 17 .. 2016, one more at every hit' of the
    sampled (flags, stat_numcommands) values."""
    flags, nums = {}, []
    for k, v in seen.items():
        if k is None:
            flags['undecodable'] = flags.get('undecodable', 0) + v
            continue
        flags[k[0]] = flags.get(k[0], 0) + v
        nums += [k[1]] * v
    nums.sort()
    step = all(b == a + 1 for a, b in zip(nums, nums[1:]))
    return '%s; server.stat_numcommands %s' % (
        ', '.join('flags %s: %d' % kv for kv in sorted(flags.items(), key=lambda kv: -kv[1])),
        '%d .. %d, %s' % (nums[0], nums[-1], 'one more at every hit' if step else
                          'NOT one more at every hit') if nums else 'none')


def values_text(seen):
    return pairs(seen) if KIND == 'heap' else static_values(seen)


def count_pairs(lines):
    seen = {}
    for a, b in lines:
        k = (int(a), int(b))
        seen[k] = seen.get(k, 0) + 1
    return seen


def run_bpftrace(bins, tmp, site, n):
    if not shutil.which('bpftrace'):
        return {'error': 'not available: bpftrace not installed'}
    if os.geteuid() != 0:
        return {'error': 'not available: bpftrace needs root'}
    srv = Server(bins['server'], tmp)
    outfile = os.path.join(tmp, 'bpf.out')
    bt = None
    try:
        srv.reset_stats()
        r = bpf_reg(site['reg'])
        if not bins.get('sym'):
            return {'error': 'not available: bpftrace cannot probe mid-function here '
                    '(no offset support) and the site symbol could not be added: '
                    + bins.get('sym_err', '?')}
        if KIND == 'heap':
            args = ('*(int32 *)(reg("%s") + %d), *(int32 *)(*(uint64 *)(reg("%s") + %d) + %d)'
                    % (r, site['argc'], r, site['cmd'], site['id']))
        else:  # the global's runtime address from the probe's own: ip - site + global
            args = ('(int32)reg("%s"), *(int64 *)(reg("ip") - %d + %d)'
                    % (bpf_reg(site['flags_reg']), site['addr'], site['numcmds']))
        probe = ('uprobe:%s:%s { @n = count(); printf("%%d %%d\\n", %s); }'
                 % (bins['server'], SITE_SYM, args))
        bt = subprocess.Popen(['bpftrace', '-o', outfile, '-e', probe],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            text = open(outfile, errors='replace').read() if os.path.exists(outfile) else ''
            if 'Attaching' in text:
                break
            if bt.poll() is not None or time.monotonic() > deadline:
                out = bt.stdout.read().decode(errors='replace') if bt.poll() is not None else ''
                return {'error': 'not available: bpftrace: ' + tail(text + out)}
            time.sleep(0.1)
        time.sleep(0.5)
        if bt.poll() is not None or 'ERROR' in re.sub(r'.*RLIMIT_MEMLOCK.*', '', text):
            return {'error': 'not available: bpftrace: ' + tail(text)}
        cpu = CpuMeter(srv.pid, [bt.pid])
        cpu.start()
        rps, err = finish(load_generator(bins['bench'], srv.port, n), time.monotonic() + TIMEOUT)
        cpu_res = {}
        cpu.stop(cpu_res, 2 * n)
        bt.send_signal(signal.SIGINT)
        try:
            bt.wait(30)
        except subprocess.TimeoutExpired:
            bt.kill()
            bt.wait()
        if err:
            return {'error': err}
        text = open(outfile, errors='replace').read()
        lines = re.findall(r'^(-?\d+) (-?\d+)$', text, re.M)
        m = re.search(r'^@n: (\d+)', text, re.M)
        lost = sum(int(x) for x in re.findall(r'Lost (\d+) events', text))
        hits = srv.calls()
        res = {'rps': rps, 'hits': hits, 'frames': len(lines), 'dropped': hits - len(lines),
               'tier': 'kernel uprobe', 'site': '%s+%d' % (SITE_FUNC, site['off'])}
        res.update(cpu_res)
        note = []
        if m:
            note.append('@n count %s' % m.group(1))
        if lost:
            note.append('lost %d events' % lost)
        if lines:
            note.append('values printed: ' + values_text(count_pairs(lines)))
        res['note'] = '; '.join(note)
        return res
    finally:
        if bt is not None and bt.poll() is None:
            bt.kill()
            bt.wait()
        srv.stop()


def run_gdb(bins, tmp, site, n):
    if not shutil.which('gdb'):
        return {'error': 'not available: gdb not installed'}
    srv = Server(bins['server'], tmp)
    outfile = os.path.join(tmp, 'gdb.out')
    g = None
    try:
        srv.reset_stats()
        addr = load_base(srv.pid, bins['server']) + site['addr']
        with open(outfile, 'w') as f:
            g = subprocess.Popen(['gdb', '-p', str(srv.pid), '-batch', '-nx',
                                  '-ex', 'set pagination off', '-ex', 'set confirm off',
                                  '-ex', 'dprintf *%#x,%s' % (addr, DPRINTF[KIND]),
                                  '-ex', 'echo NS-READY\\n', '-ex', 'continue',
                                  '-ex', 'detach'],
                                 stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while 'NS-READY' not in open(outfile, errors='replace').read():
            if g.poll() is not None or time.monotonic() > deadline:
                return {'error': 'not available: gdb: ' + tail(open(outfile).read())}
            time.sleep(0.1)
        time.sleep(0.5)
        cpu = CpuMeter(srv.pid, [g.pid])
        cpu.start()
        rps, err = finish(load_generator(bins['bench'], srv.port, n), time.monotonic() + TIMEOUT)
        cpu_res = {}
        cpu.stop(cpu_res, 2 * n)
        g.send_signal(signal.SIGINT)
        try:
            g.wait(30)
        except subprocess.TimeoutExpired:
            g.kill()
            g.wait()
        if err:
            return {'error': err}
        text = open(outfile, errors='replace').read()
        lines = re.findall(r'^dp (-?\d+) (-?\d+)$', text, re.M)
        hits = srv.calls()
        return {'rps': rps, 'hits': hits, 'frames': len(lines), 'dropped': hits - len(lines),
                'tier': 'gdb stop', 'site': '*%s+%d' % (SITE_FUNC, site['off']),
                'note': 'values printed: ' + values_text(count_pairs(lines)), **cpu_res}
    finally:
        if g is not None and g.poll() is None:
            g.kill()
            g.wait()
        srv.stop()


# ---------------------------------------------------------------- report

def total(rps):
    """Requests/s over both tests (equal request counts: the harmonic mean)."""
    return 2.0 / (1.0 / rps['SET'] + 1.0 / rps['GET'])


def main():
    tree, why = fetch_and_build()
    if why:
        print('bench_server: not available: %s' % why)
        return 0
    src = os.path.join(tree, 'src')
    bins = {'server': os.path.join(src, 'redis-server'),
            'bench': os.path.join(src, 'redis-benchmark')}
    if not shutil.which('gdb'):
        print('bench_server: not available: gdb is needed to locate the site')
        return 0
    site, why = find_site(tree, bins['server'])
    if why:
        print('bench_server: not available: %s' % why)
        return 0
    tmp = tempfile.mkdtemp(prefix='ns-bench-server-')
    try:
        copy, why = site_binary(bins['server'], site, tmp)
        bins['server'], bins['sym'], bins['sym_err'] = copy, why is None, why
        return bench(tree, bins, site, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(tree, bins, site, tmp):
    rows = []

    def add(name, res, n):
        res = dict(res)
        res['tool'], res['n'] = name, n
        rows.append(res)
        log('%-34s %s' % (name, '%.0f req/s' % total(res['rps']) if 'rps' in res
                          else res.get('error')))

    log('redis: %s; site server.c:%d (%s+%d) "%s"' % (os.path.basename(tree), site['line'],
                                                      SITE_FUNC, site['off'], site['text']))
    if want('untraced'):
        add('untraced (before)', run_untraced(bins, tmp, REQ), REQ)
    if want('nonstop'):
        add('nonstop logpoint', run_nonstop(bins, tmp, site, REQ), REQ)
    if want('bpftrace'):
        add('bpftrace uprobe (printf + count)', run_bpftrace(bins, tmp, site, REQ), REQ)
    if want('gdb'):
        add('gdb dprintf', run_gdb(bins, tmp, site, REQ_GDB), REQ_GDB)
    if want('untraced'):
        add('untraced (after)', run_untraced(bins, tmp, REQ), REQ)
    if want('nonstop'):
        add('nonstop logpoint (again)', run_nonstop(bins, tmp, site, REQ), REQ)
    pairs_loss, pairs_cpu = [], []
    for i in range(PAIRS if want('untraced') and want('nonstop') else 0):
        got = {}
        for name in ('untraced', 'nonstop') if i % 2 == 0 else ('nonstop', 'untraced'):
            got[name] = (run_untraced(bins, tmp, REQ) if name == 'untraced'
                         else run_nonstop(bins, tmp, site, REQ))
            log('pair %d: %-26s %s' % (i + 1, name, '%.0f req/s' % total(got[name]['rps'])
                                       if 'rps' in got[name] else got[name].get('error')))
        if all('rps' in r for r in got.values()):
            pairs_loss.append((1 - total(got['nonstop']['rps']) / total(got['untraced']['rps']))
                              * 100)
            if all(r.get('srv_cpu') for r in got.values()):
                pairs_cpu.append((got['nonstop']['srv_cpu'] - got['untraced']['srv_cpu'],
                                  got['untraced']['srv_cpu'], got['nonstop'].get('tool_cpu'),
                                  got['nonstop'].get('srv_agent', 0)))

    onoff = run_onoff(bins, tmp, site, ONOFF) if want('nonstop') and ONOFF > 0 else None
    if onoff:
        log('on/off: %s' % ('%d pairs' % len(onoff['loss']) if 'loss' in onoff
                            else onoff.get('error')))

    base = [total(r['rps']) for r in rows if r['tool'].startswith('untraced') and 'rps' in r]
    ns = [total(r['rps']) for r in rows if r['tool'].startswith('nonstop') and 'rps' in r]
    ref = sum(base) / len(base) if base else None
    print()
    print('Server throughput: %s (Debian source, -O2 -g, MALLOC=libc), redis-benchmark -t '
          'set,get -c %d on 127.0.0.1.' % (os.path.basename(tree), CLIENTS))
    print('Logpoint "%s" at server.c:%d, %s+%d (mid-function; runs once per command): %s'
          % (LOGPOINT, site['line'], SITE_FUNC, site['off'], site['text']))
    print('Machine: %d cores, load %s; server, load generator and tool share them: expect '
          '10-30%% noise.' % (os.cpu_count(), ' '.join(open('/proc/loadavg').read().split()[:3])))
    if ref:
        spread = (max(base) - min(base)) / ref * 100 if len(base) > 1 else 0
        print('Reference: mean of the untraced runs, %.0f req/s (spread between them %.1f%%).'
              % (ref, spread))
    print()
    hdr = '%-34s %-26s %8s %8s %8s %7s %8s %8s %8s %7s %6s %7s  %s' % (
        'run', 'tier [site]', 'requests', 'SET/s', 'GET/s', 'loss', 'hits', 'captured',
        'dropped', 'srv us', '(usr)', 'tool us', 'target')
    print(hdr)
    print('-' * len(hdr))
    for r in rows:
        if 'rps' not in r:
            print('%-34s %s' % (r['tool'], r.get('error') if str(r.get('error', '')).startswith(
                'not available') else 'not available: %s' % r.get('error')))
            continue
        t = total(r['rps'])
        loss = (1 - t / ref) * 100 if ref else None
        tier = r.get('tier', '-')
        if r.get('site'):
            tier += ' [%s]' % r['site']
        target = ''
        if r['tool'].startswith('nonstop') and loss is not None:
            target = '< %g %% loss: %s' % (TARGET_LOSS, 'PASS' if loss < TARGET_LOSS else 'MISS')
        print('%-34s %-26s %8d %8.0f %8.0f %7s %8s %8s %8s %7s %6s %7s  %s' % (
            r['tool'], tier, 2 * r['n'], r['rps']['SET'], r['rps']['GET'],
            '-' if loss is None or r['tool'].startswith('untraced') else '%.1f%%' % loss,
            r.get('hits', '-'), r.get('frames', '-'), r.get('dropped', '-'),
            '-' if r.get('srv_cpu') is None else '%.1f' % r['srv_cpu'],
            '-' if r.get('srv_usr') is None else '%.1f' % r['srv_usr'],
            '-' if r.get('tool_cpu') is None else '%.1f' % r['tool_cpu'], target))
        if r.get('reason') and r.get('tier') != 'jump':
            print('%-34s   (tier reason: %s)' % ('', r['reason']))
        if r.get('note'):
            print('%-34s   (%s)' % ('', r['note']))
    if ref and len(ns) > 1:
        loss = (1 - sum(ns) / len(ns) / ref) * 100
        print('%-34s %s' % ('nonstop, mean of its runs', '%.0f req/s, loss %.1f%%  < %g %% loss: %s'
                            % (sum(ns) / len(ns), loss, TARGET_LOSS,
                               'PASS' if loss < TARGET_LOSS else 'MISS')))
    if pairs_loss:
        mean = sum(pairs_loss) / len(pairs_loss)
        med = sorted(pairs_loss)[len(pairs_loss) // 2]
        print('%-34s %s' % ('nonstop vs untraced, %d pairs' % len(pairs_loss),
                            'loss per pair %s; mean %.1f%%, median %.1f%%'
                            % (' '.join('%.1f%%' % x for x in pairs_loss), mean, med)))
        if len(pairs_loss) > 1:
            # The machine's own spread decides what the pairs can show.
            mean, lo, hi, sd = mean_interval(pairs_loss)
            print('%-34s %s' % ('', 'mean %.1f%%, 95%% interval %.1f%% .. %.1f%% (sd %.1f%% '
                                    'per pair)  < %g %% loss: %s'
                                % (mean, lo, hi, sd, TARGET_LOSS, verdict(lo, hi))))
    if len(pairs_cpu) > 1:
        # CPU accounting: what a hit costs inside the server, per pair, against the same
        # pair's untraced run (the server's CPU time per request varies less from run to
        # run than its throughput).
        n, base_cpu = len(pairs_cpu), sum(x[1] for x in pairs_cpu) / len(pairs_cpu)
        mean, lo, hi, _ = mean_interval([x[0] for x in pairs_cpu])
        tool = [x[2] for x in pairs_cpu if x[2] is not None]
        print('%-34s %s' % ('server CPU added, %d pairs' % n,
                            '%+.2f us per request (%+.1f%% of the untraced %.2f us), 95%% '
                            'interval %+.2f .. %+.2f us, of which the agent\'s thread %.2f us;'
                            % (mean, mean / base_cpu * 100, base_cpu, lo, hi,
                               sum(x[3] for x in pairs_cpu) / n)))
        print('%-34s %s' % ('', 'the tool\'s own processes %.2f us per request'
                            % (sum(tool) / len(tool) if tool else float('nan'))))
    if onoff and 'loss' in onoff and len(onoff['loss']) > 1:
        mean, _, _, sd = mean_interval(onoff['loss'])
        med, lo, hi = median_interval(onoff['loss'])
        print('%-34s %s' % ('nonstop logpoint on/off, one run', '%d pairs of %g s phases '
                            '(SET, %.0f req/s off): loss median %.2f%%, 95%% interval %s '
                            '(mean %.2f%%, sd %.1f%% per pair)  < %g %% loss: %s'
                            % (len(onoff['loss']), ONOFF_PHASE,
                               sum(x[2] for x in onoff['cpu']) / len(onoff['cpu']), med,
                               '%.2f%% .. %.2f%%' % (lo, hi) if lo is not None else 'n/a',
                               mean, sd, TARGET_LOSS,
                               verdict(lo, hi) if lo is not None else 'not shown: too few pairs')))
        cmed, clo, chi = median_interval([x[0] for x in onoff['cpu']])
        off_cpu = sum(x[1] for x in onoff['cpu']) / len(onoff['cpu'])
        print('%-34s %s' % ('', 'server CPU per command, on - off: median %+.3f us (%+.1f%% of '
                                '%.2f us), 95%% interval %s;' % (
                                    cmed, cmed / off_cpu * 100, off_cpu,
                                    '%+.3f .. %+.3f us' % (clo, chi) if clo is not None
                                    else 'n/a')))
        print('%-34s %s' % ('', 'CPU per second: the agent\'s thread in the server %.2f ms '
                                '(both phases), the stub + bench_drain %.1f ms off, %.1f ms on'
                                % (onoff['agent_ms_s'], onoff['tool_ms_s'][False],
                                   onoff['tool_ms_s'][True])))
        ok = onoff['frames'] >= onoff['on_cmds'] and not onoff['bad']
        print('%-34s %s' % ('', 'frames %d (every command of the measured on phases, %d: %s), '
                                'dropped %d' % (onoff['frames'], onoff['on_cmds'],
                                                'yes' if ok else 'NO', onoff['dropped'])))
    elif onoff:
        print('%-34s %s' % ('nonstop logpoint on/off, one run', onoff.get('error')))
    print()
    print('requests/s: redis-benchmark\'s own SET and GET numbers; loss: 1 - (harmonic mean '
          'of SET/s and GET/s) / untraced reference.')
    print('hits: commands the server executed while the tool was attached (redis INFO '
          'commandstats); captured: frames (nonstop),')
    print('printed lines (bpftrace, gdb); dropped: hits - captured (nonstop: the L items, '
          'ring or queue overflow).')
    print('srv us (usr) / tool us: CPU time per request (us) of the redis-server process (every '
          'thread; uprobe and BPF work counts here; (usr): its user part)')
    print('and of the tool\'s own processes (nonstop: the stub + bench_drain; '
          'bpftrace; gdb), during the load.')
    print('Target (issue 5): < %g %% throughput loss, informational: PASS/MISS never fails '
          'the run.' % TARGET_LOSS)
    return 0


if __name__ == '__main__':
    sys.exit(main())
