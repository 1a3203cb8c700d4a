#!/usr/bin/env python3
"""nonstop-stub --attach PID against programs started without nonstop. The driver
speaks RSP to the stub itself (over --stdio) and checks the programs' own behaviour
(exit codes, output) and their memory (/proc/PID/mem against the ELF file, nm).

usage: test_attach.py BUILD_DIR"""
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from nsrsp import Rsp, drain_frames, qtdp_packets  # noqa: E402

BUILD = os.path.abspath(sys.argv[1])
STUB = os.path.join(BUILD, 'bin', 'nonstop-stub')
AGENT = os.path.join(BUILD, 'lib', 'libnonstop-agent.so')
TDIR = os.path.join(BUILD, 'tests', 'attach')
BLOCKER = os.path.join(TDIR, 'attach-blocker')
LOOPER = os.path.join(TDIR, 'attach-looper')
STATIC = os.path.join(TDIR, 'attach-looper-static')

results = []
procs = []


def check(name, ok, detail=''):
    results.append(bool(ok))
    print(('ok   ' if ok else 'FAIL ') + 'test_attach__' + name + ('' if ok else '\n     ' + str(detail)[-3000:]),
          flush=True)
    return ok


def skip(name, why):
    print('skip test_attach__%s: %s' % (name, why), flush=True)


class Line:
    """Line reader over a pipe with timeouts."""

    def __init__(self, f):
        self.fd = f.fileno()
        self.buf = b''
        self.all = b''

    def readline(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while b'\n' not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                return None
            d = os.read(self.fd, 65536)
            if not d:
                return None
            self.buf += d
            self.all += d
        line, self.buf = self.buf.split(b'\n', 1)
        return line.decode()

    def drain(self):
        while select.select([self.fd], [], [], 0)[0]:
            d = os.read(self.fd, 65536)
            if not d:
                break
            self.all += d
        return self.all.decode(errors='replace')


def start_stub(pid, extra=(), user=None):
    cmd = [STUB, '--attach', str(pid), '--stdio', '--agent', AGENT] + list(extra)
    if user:
        cmd = user + cmd
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(p)
    return p


def stub_stderr_line(p, timeout=10.0):
    """The stub's first stderr line (the attach message or the error)."""
    return Line(p.stderr).readline(timeout) or ''


def wait_exit(p, timeout=10.0):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


def start_prog(args, **kw):
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    procs.append(p)
    return p, Line(p.stdout)


def wait_blocked(pid, timeout=3.0):
    """The main thread sleeps in the kernel (state S)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open('/proc/%d/task/%d/stat' % (pid, pid)) as f:
            st = f.read()
        if st[st.rindex(')') + 2] == 'S':
            return True
        time.sleep(0.01)
    return False


def agent_mappings(pid):
    files = set()
    with open('/proc/%d/maps' % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].endswith('/libnonstop-agent.so'):
                files.add((parts[3], parts[4], parts[5]))
    return files


PAUSE_RE = re.compile(r'nonstop-stub: attached to (\d+) in ([\d.]+) ms \(thread (\d+) paused once\)')
pauses = []


def attach_msg_ok(name, line, pid):
    m = PAUSE_RE.search(line)
    ok = m and int(m.group(1)) == pid and int(m.group(3)) == pid
    if ok:
        pauses.append(float(m.group(2)))
    return check(name, ok, line)


# ---- blocking system calls survive the attach ----

def test_blocker(mode):
    prog, out = start_prog([BLOCKER, mode])
    line = out.readline()
    if not check('blocker_%s_ready' % mode, line and line.startswith('ready'), line):
        prog.kill()
        return
    if mode != 'spin':
        wait_blocked(prog.pid)
    time.sleep(0.3)
    stub = start_stub(prog.pid)
    err = stub_stderr_line(stub)
    attach_msg_ok('blocker_%s_pause_message' % mode, err, prog.pid)
    rsp = Rsp(stub)
    try:
        sup = rsp.handshake()
        check('blocker_%s_rsp_served' % mode, 'NsFramePush+' in sup, sup)
        check('blocker_%s_qattached' % mode, rsp.cmd('qAttached') == '1')
        check('blocker_%s_detach' % mode, rsp.cmd('D') == 'OK')
    except (TimeoutError, EOFError) as e:
        check('blocker_%s_rsp_served' % mode, False, e)
    rc = wait_exit(stub)
    check('blocker_%s_stub_exits_after_detach' % mode, rc == 0, rc)
    # Poke the program.
    if mode in ('read', 'futex'):
        prog.stdin.write(b'x')
        prog.stdin.flush()
    elif mode == 'accept':
        port = int(line.split()[1])
        c = socket.create_connection(('127.0.0.1', port), timeout=5)
        c.close()
    elif mode == 'spin':
        time.sleep(0.2)
        prog.send_signal(signal.SIGUSR1)
    rc = wait_exit(prog, 10)
    done = out.readline(2)
    errs = prog.stderr.read().decode(errors='replace')
    check('blocker_%s_calls_returned_normally' % mode, rc == 0 and done == 'done 0',
          'exit %s, stdout %r, stderr %r' % (rc, done, errs))


# ---- tracepoints through an attached stub ----

def nm_symbols(path):
    out = subprocess.run(['nm', path], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) == 3:
            syms[p[2]] = int(p[0], 16)
    return syms


def load_bias(pid, exe):
    real = os.path.realpath(exe)
    with open('/proc/%d/maps' % pid) as f:
        for line in f:
            p = line.split()
            if len(p) >= 6 and p[5] == real and int(p[2], 16) == 0:
                return int(p[0].split('-')[0], 16)
    raise RuntimeError('no mapping of %s' % exe)


def file_bytes(path, vaddr, n):
    """Bytes at link-time address @vaddr in the ELF file (program headers)."""
    with open(path, 'rb') as f:
        data = f.read()
    phoff, = struct.unpack_from('<Q', data, 0x20)
    phentsize, phnum = struct.unpack_from('<HH', data, 0x36)
    for i in range(phnum):
        ptype, flags, off, va, pa, filesz = struct.unpack_from('<IIQQQQ', data, phoff + i * phentsize)
        if ptype == 1 and va <= vaddr < va + filesz:
            o = off + vaddr - va
            return data[o:o + n]
    raise RuntimeError('0x%x not in the file' % vaddr)


def mem_bytes(pid, addr, n):
    with open('/proc/%d/mem' % pid, 'rb') as f:
        f.seek(addr)
        return f.read(n)


def collect_frames(rsp, want, timeout=5.0):
    frames, items = [], []
    deadline = time.monotonic() + timeout
    while len(frames) < want and time.monotonic() < deadline:
        try:
            rsp.wait_note('NsFrames', max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        f, i = drain_frames(rsp)
        frames += [(fr['magic'], fr['tp'], fr['addr'], fr['tid'], dict(fr['mem'])) for fr in f]
        items += i
    return frames, items


def set_tracepoint(rsp, addr, counter):
    r1 = rsp.cmd('QTinit')
    r2, r3 = [rsp.cmd(pkt) for pkt in qtdp_packets(1, addr, actions=['MFFFFFFFF,%x,4' % counter])]
    r4 = rsp.cmd('QTStart')
    return (r1, r2, r3, r4) == ('OK', 'OK', 'OK', 'OK'), (r1, r2, r3, r4)


def frames_ok(name, frames, pid, tick, counter):
    vals = []
    good = bool(frames)
    for magic, tp, addr, tid, mem in frames:
        good = good and magic == 0x5246534e and tp == 1 and addr == tick and tid == pid and counter in mem
        if counter in mem and len(mem[counter]) == 4:
            vals.append(struct.unpack('<i', mem[counter])[0])
    # counter grows by i on every call: the captured values strictly increase.
    good = good and len(vals) == len(frames) and all(a < b for a, b in zip(vals, vals[1:]))
    return check(name, good, frames[:3])


def test_tracepoints():
    prog, out = start_prog([LOOPER])
    if not check('looper_ready', out.readline() == 'ready'):
        return
    pid = prog.pid
    syms = nm_symbols(LOOPER)
    bias = load_bias(pid, LOOPER)
    tick, counter = bias + syms['tick'], bias + syms['counter']
    orig = file_bytes(LOOPER, syms['tick'], 16)

    # 1: attach, trace, detach.
    stub = start_stub(pid)
    attach_msg_ok('first_attach_pause_message', stub_stderr_line(stub), pid)
    rsp = Rsp(stub)
    rsp.handshake()
    check('qattached_is_1', rsp.cmd('qAttached') == '1')
    xf = rsp.cmd('qXfer:exec-file:read::0,400')
    check('exec_file_is_real_path', xf == 'l' + os.path.realpath(LOOPER), xf)
    bid = rsp.cmd('qNsBuildId')
    note = subprocess.run(['readelf', '-n', LOOPER], capture_output=True, text=True).stdout
    m = re.search(r'Build ID: ([0-9a-f]+)', note)
    check('build_id_from_proc_exe', m and bid == m.group(1), (bid, m and m.group(1)))
    mr = rsp.cmd('m%x,10' % tick)
    check('memory_read', mr == orig.hex(), (mr, orig.hex()))
    ok, why = set_tracepoint(rsp, tick, counter)
    check('tracepoint_installed', ok, why)
    check('int3_in_code_while_traced', mem_bytes(pid, tick, 1) == b'\xcc')
    frames, _ = collect_frames(rsp, 3)
    frames_ok('frames_after_attach', frames, pid, tick, counter)
    check('detach_ok', rsp.cmd('D') == 'OK')
    check('stub_exits_after_detach', wait_exit(stub) == 0)
    check('code_restored_after_detach', mem_bytes(pid, tick, 16) == orig)
    check('agent_loaded_once', len(agent_mappings(pid)) == 1, agent_mappings(pid))

    # 2: attach again: the agent is reused.
    stub = start_stub(pid)
    attach_msg_ok('second_attach_pause_message', stub_stderr_line(stub), pid)
    rsp = Rsp(stub)
    rsp.handshake()
    ok, why = set_tracepoint(rsp, tick, counter)
    check('second_attach_tracepoint', ok, why)
    frames, _ = collect_frames(rsp, 3)
    frames_ok('second_attach_frames', frames, pid, tick, counter)
    check('second_attach_agent_reused', len(agent_mappings(pid)) == 1, agent_mappings(pid))

    # 3: a second stub while the first is attached is refused; the first keeps working.
    other = start_stub(pid)
    line = stub_stderr_line(other)
    rc = wait_exit(other)
    check('concurrent_attach_refused', rc not in (0, None) and 'another nonstop-stub' in line, (rc, line))
    frames, _ = collect_frames(rsp, 2)
    frames_ok('first_stub_still_works', frames, pid, tick, counter)

    # 4: SIGTERM: tracepoints out, the program runs on.
    stub.send_signal(signal.SIGTERM)
    check('sigterm_stub_exits', wait_exit(stub) == 0)
    check('sigterm_code_restored', mem_bytes(pid, tick, 16) == orig)

    # 5: SIGKILL of the stub: the agent notices EOF and restores the code itself.
    stub = start_stub(pid)
    attach_msg_ok('third_attach_pause_message', stub_stderr_line(stub), pid)
    rsp = Rsp(stub)
    rsp.handshake()
    ok, why = set_tracepoint(rsp, tick, counter)
    check('third_attach_tracepoint', ok and mem_bytes(pid, tick, 1) == b'\xcc', why)
    stub.kill()
    stub.wait()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and mem_bytes(pid, tick, 16) != orig:
        time.sleep(0.01)
    check('sigkill_code_restored_within_1s', mem_bytes(pid, tick, 16) == orig)
    out.drain()
    n0 = out.all.count(b'\n')
    time.sleep(0.5)
    out.drain()
    check('program_runs_on_after_sigkill', prog.poll() is None and out.all.count(b'\n') > n0 + 2)

    # 6: the program exits while attached: the exit is the last item.
    stub = start_stub(pid)
    attach_msg_ok('fourth_attach_pause_message', stub_stderr_line(stub), pid)
    rsp = Rsp(stub)
    rsp.handshake()
    ok, why = set_tracepoint(rsp, tick, counter)
    check('fourth_attach_tracepoint', ok, why)
    prog.send_signal(signal.SIGUSR1)
    rc = wait_exit(prog)
    check('program_exit_code', rc == 7, rc)
    frames, items = [], []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(i[:1] in ('W', 'X') for i in items):
        f, i = collect_frames(rsp, 10 ** 9, max(0.1, deadline - time.monotonic()))
        frames += f
        items += i
    # Linux 6.15+ tells a non-parent the status (PIDFD_INFO_EXIT); else X0 = unknown.
    check('exit_reported_as_last_item', items and items[-1] in ('W7', 'X0'), items)
    if items and items[-1] == 'X0':
        print('note: exit status unknown to the stub (kernel without PIDFD_INFO_EXIT)')
    stub.stdin.close()
    check('stub_exits_after_program_and_client', wait_exit(stub) == 0)


# ---- --listen: the stub stays attached across clients ----

def test_listen():
    prog, out = start_prog([LOOPER])
    out.readline()
    pid = prog.pid
    syms = nm_symbols(LOOPER)
    bias = load_bias(pid, LOOPER)
    tick, counter = bias + syms['tick'], bias + syms['counter']
    orig = file_bytes(LOOPER, syms['tick'], 16)
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    stub = subprocess.Popen([STUB, '--attach', str(pid), '--listen', '127.0.0.1:%d' % port, '--agent', AGENT],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(stub)
    attach_msg_ok('listen_pause_message', stub_stderr_line(stub), pid)
    for round_ in (1, 2):
        c = socket.create_connection(('127.0.0.1', port), timeout=5)

        class P:
            stdin = c.makefile('wb')
            stdout = c

        rsp = Rsp(P)
        rsp.fd = c.fileno()
        rsp.handshake()
        ok, why = set_tracepoint(rsp, tick, counter)
        frames, _ = collect_frames(rsp, 2)
        frames_ok('listen_client_%d_frames' % round_, frames, pid, tick, counter)
        rsp.cmd('D')
        c.close()
        time.sleep(0.2)
        check('listen_client_%d_code_restored' % round_, mem_bytes(pid, tick, 16) == orig)
    check('listen_stub_keeps_listening', stub.poll() is None)
    stub.send_signal(signal.SIGTERM)
    check('listen_stub_exits_on_sigterm', wait_exit(stub) == 0)
    check('listen_program_runs_on', prog.poll() is None)
    prog.kill()
    prog.wait()


# ---- a program launched by a stub that was killed: the preloaded agent is reused ----

def test_after_launch():
    launch = subprocess.Popen([STUB, '--stdio', '--agent', AGENT, '--', LOOPER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(launch)
    err = Line(launch.stderr)
    if not check('launched_ready', err.readline() == 'ready'):  # the program's stdout is the stub's stderr
        return
    kids = open('/proc/%d/task/%d/children' % (launch.pid, launch.pid)).read().split()
    pid = int(kids[0])
    rsp = Rsp(launch)
    rsp.handshake()
    syms = nm_symbols(LOOPER)
    bias = load_bias(pid, LOOPER)
    tick, counter = bias + syms['tick'], bias + syms['counter']
    orig = file_bytes(LOOPER, syms['tick'], 16)
    ok, why = set_tracepoint(rsp, tick, counter)
    check('launched_tracepoint', ok and mem_bytes(pid, tick, 1) == b'\xcc', why)
    launch.kill()
    launch.wait()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and mem_bytes(pid, tick, 16) != orig:
        time.sleep(0.01)
    check('launch_stub_killed_code_restored', mem_bytes(pid, tick, 16) == orig)
    stub = start_stub(pid)
    attach_msg_ok('attach_after_launch_pause_message', stub_stderr_line(stub), pid)
    rsp = Rsp(stub)
    rsp.handshake()
    ok, why = set_tracepoint(rsp, tick, counter)
    check('attach_after_launch_tracepoint', ok, why)
    frames, _ = collect_frames(rsp, 3)
    frames_ok('attach_after_launch_frames', frames, pid, tick, counter)
    check('attach_after_launch_agent_reused', len(agent_mappings(pid)) == 1, agent_mappings(pid))
    rsp.cmd('D')
    check('attach_after_launch_detach', wait_exit(stub) == 0 and mem_bytes(pid, tick, 16) == orig)
    os.kill(pid, signal.SIGKILL)


# ---- refusals ----

def test_refusals():
    # A PID that does not exist.
    with open('/proc/sys/kernel/pid_max') as f:
        pid = int(f.read()) - 1
    while os.path.exists('/proc/%d' % pid):
        pid -= 1
    p = start_stub(pid)
    line = stub_stderr_line(p)
    rc = wait_exit(p)
    check('refuse_no_such_process', rc not in (0, None) and 'no such process' in line, (rc, line))

    # A static program: no dlopen, so no agent: the stub attaches in the ptrace tier
    # (tests/ptrace covers its tracepoints); closing the connection detaches and the
    # program runs on untouched.
    if os.path.exists(STATIC):
        prog, out = start_prog([STATIC])
        out.readline()
        p = start_stub(prog.pid)
        line = stub_stderr_line(p)
        check('static_attaches_in_ptrace_tier', p.poll() is None and 'ptrace tier' in line and
              'no dlopen in the target (static binary?)' in line, (p.poll(), line))
        p.stdin.close()
        rc = wait_exit(p)
        time.sleep(0.1)
        check('static_untouched', rc == 0 and prog.poll() is None and not agent_mappings(prog.pid),
              (rc, prog.poll()))
        prog.kill()
        prog.wait()
    else:
        skip('static_attaches_in_ptrace_tier', 'no static libc to build the target')

    # Already traced.
    if shutil.which('strace'):
        prog, out = start_prog(['strace', '-o', '/dev/null', LOOPER])
        out.readline()
        target = None
        for _ in range(100):
            kids = open('/proc/%d/task/%d/children' % (prog.pid, prog.pid)).read().split()
            if kids:
                target = int(kids[0])
                break
            time.sleep(0.02)
        p = start_stub(target)
        line = stub_stderr_line(p)
        rc = wait_exit(p)
        check('refuse_already_traced', rc not in (0, None) and
              ('%d is already traced by PID %d (strace)' % (target, prog.pid)) in line, (rc, line))
        check('traced_untouched', not agent_mappings(target))
        os.kill(target, signal.SIGKILL)
        wait_exit(prog)
    else:
        skip('refuse_already_traced', 'strace is not installed')

    # Not permitted: an unprivileged user against a root process.
    setpriv = shutil.which('setpriv')
    if os.geteuid() != 0 or not setpriv:
        skip('refuse_unprivileged', 'needs root and setpriv')
    else:
        prog, out = start_prog([LOOPER])
        out.readline()
        user = [setpriv, '--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups']
        probe = subprocess.run(user + [STUB, '--help'], capture_output=True, text=True)
        if 'usage' not in probe.stderr:
            skip('refuse_unprivileged', 'user nobody cannot run %s: %s' % (STUB, probe.stderr.strip()))
        else:
            p = start_stub(prog.pid, user=user)
            line = stub_stderr_line(p)
            rc = wait_exit(p)
            check('refuse_unprivileged', rc not in (0, None) and 'permission denied' in line and
                  'CAP_SYS_PTRACE' in line and 'another user' in line, (rc, line))
            check('unprivileged_untouched', prog.poll() is None and not agent_mappings(prog.pid))
        prog.kill()
        prog.wait()
    skip('refuse_32bit', 'a 32-bit or non-x86 program cannot be built here')


def main():
    try:
        for mode in ('read', 'accept', 'nanosleep', 'futex', 'spin'):
            test_blocker(mode)
        test_tracepoints()
        test_listen()
        test_after_launch()
        test_refusals()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
    if pauses:
        print('attach pauses (ms): %s' % ' '.join('%.1f' % x for x in pauses))
    print('%d passed, %d failed' % (sum(results), len(results) - sum(results)))
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
