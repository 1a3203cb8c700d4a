#!/usr/bin/env python3
"""The ptrace tier: tracepoints in a static program (no agent possible), driven over
RSP against nonstop-stub --stdio. Values are checked against the program's own output
("call <i> <acc before>"), code bytes against the ELF file, addresses from nm.

usage: test_ptrace.py BUILD_DIR"""
import ctypes
import os
import select
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from nsrsp import Rsp, qtdp_packets, split_frames, x_act  # noqa: E402

BUILD = os.path.abspath(sys.argv[1])
STUB = os.path.join(BUILD, 'bin', 'nonstop-stub')
AGENT = os.path.join(BUILD, 'lib', 'libnonstop-agent.so')
TDIR = os.path.join(BUILD, 'tests', 'ptrace')
STATIC = os.path.join(TDIR, 'ptrace-loop-static')
DYNAMIC = os.path.join(TDIR, 'ptrace-loop')

results = []


def check(name, ok, detail=''):
    results.append(bool(ok))
    print(('ok   ' if ok else 'FAIL ') + 'test_ptrace__' + name +
          ('' if ok else '\n     ' + str(detail)[-3000:]), flush=True)
    return ok


# Orphans (the program after its stub exited or was killed) come back to us.
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def nm_addr(path, sym):
    out = subprocess.run(['nm', path], capture_output=True, text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) == 3 and f[2] == sym and f[1] in 'Tt':
            return int(f[0], 16)
    raise KeyError(sym)


def elf_bytes(path, addr, n):
    """Bytes at virtual address @addr in the ELF file (PT_LOAD mapping)."""
    with open(path, 'rb') as f:
        data = f.read()
    phoff, = struct.unpack_from('<Q', data, 0x20)
    phentsize, phnum = struct.unpack_from('<HH', data, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from('<IIQQQQ', data, phoff + i * phentsize)
        if p_type == 1 and p_vaddr <= addr < p_vaddr + p_filesz:
            o = p_offset + addr - p_vaddr
            return data[o:o + n]
    raise KeyError(hex(addr))


def proc_bytes(pid, addr, n):
    with open('/proc/%d/mem' % pid, 'rb') as f:
        f.seek(addr)
        return f.read(n)


RDI, RSI = 5, 4
X_ACC = bytes([0x26, 0x00, RSI, 0x22, 0x04, 0x0c, 0x27])  # trace 4 bytes at rsi
COND_EVEN = bytes([0x26, 0x00, RDI, 0x22, 0x01, 0x0f, 0x0e, 0x27])  # !(rdi & 1)


def define_tp(rsp, num, addr, cond=None):
    d, regs, x = qtdp_packets(num, addr, cond, actions=['R3ffffff', x_act(X_ACC)])
    assert rsp.cmd(d) == 'OK'
    assert rsp.cmd(regs) == 'OK'
    return rsp.cmd(x)


def tier(rsp, num):
    r = rsp.cmd('qNsTPInfo:%x' % num)
    kv = dict(x.split('=', 1) for x in r.split(';'))
    return kv.get('tier'), bytes.fromhex(kv.get('reason', '')).decode()


def drain(rsp, until_exit=True, timeout=30.0, stop_after=None):
    """Frames until the exit item (or @stop_after frames); returns (frames, exit item)."""
    frames, exit_item = [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = rsp.cmd('qNsFrames')
        if r == 'OK':
            if stop_after is not None and len(frames) >= stop_after:
                break
            time.sleep(0.02)
            continue
        f, items = split_frames(r, strict=True)
        frames += f
        for item in items:
            if item[:1] in ('W', 'X'):
                exit_item = item
        if exit_item and until_exit:
            break
        if stop_after is not None and len(frames) >= stop_after:
            break
    return frames, exit_item


def start_stub(args, hold=True):
    rfd, wfd = os.pipe()
    cmd = [STUB, '--stdio', '--agent', AGENT, '--stdout-fd', str(wfd)]
    if hold:
        cmd.append('--hold')
    p = subprocess.Popen(cmd + ['--'] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, pass_fds=(wfd,))
    os.close(wfd)
    return p, rfd


def read_all_fd(fd, timeout=30.0):
    out = b''
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            d = os.read(fd, 65536)
            if not d:
                break
            out += d
    os.close(fd)
    return out.decode()


def calls_of(text):
    """{i: acc before} and the checksum line from the program's output."""
    calls, checksum = {}, None
    for line in text.splitlines():
        f = line.split()
        if f[:1] == ['call']:
            calls[int(f[1])] = int(f[2])
        elif f[:1] == ['checksum']:
            checksum = line
    return calls, checksum


def ticks_of(text):
    return [int(line.split()[2]) for line in text.splitlines() if line.startswith('tick ')]


def frame_values(frames):
    vals = {}
    for f in frames:
        i = f['regs'][RDI] if f['regs'] else None
        acc = struct.unpack('<i', f['mem'][0][1])[0] if f['mem'] and len(f['mem'][0][1]) == 4 else None
        vals.setdefault(i, []).append(acc)
    return vals


def reap(pid, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, st = os.waitpid(pid, os.WNOHANG)
        if r == pid:
            return st
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run_untraced(prog, n, gap):
    t0 = time.monotonic()
    out = subprocess.run([prog, str(n), str(gap)], capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout, time.monotonic() - t0


def prog_pid(stub):
    """The program's pid: the stub's child that is not the watchdog (its own session)."""
    for _ in range(100):
        try:
            kids = open('/proc/%d/task/%d/children' % (stub.pid, stub.pid)).read().split()
        except OSError:
            kids = []
        for k in kids:
            try:
                comm = open('/proc/%s/comm' % k).read().strip()
            except OSError:
                continue
            if comm.startswith('ptrace-loop'):
                return int(k)
        time.sleep(0.02)
    return None


# ---- launch of a static program ----

def test_launch(N=200, GAP=2000):
    addr = nm_addr(STATIC, 'step')
    rc0, out0, t_untraced = run_untraced(STATIC, N, GAP)
    calls0, sum0 = calls_of(out0)
    p, outfd = start_stub([STATIC, str(N), str(GAP)])
    rsp = Rsp(p)
    rsp.handshake()
    rsp.cmd('QTinit')
    check('launch_define', define_tp(rsp, 1, addr) == 'OK')
    check('launch_tier', tier(rsp, 1) == ('ptrace', 'ptrace tier: static binary: the agent cannot be preloaded'),
          tier(rsp, 1))
    st = rsp.cmd('qTStatus')
    check('launch_qtstatus_tier', 'ns_tier:ptrace' in st, st)
    check('launch_start', rsp.cmd('QTStart') == 'OK')
    t0 = time.monotonic()
    rsp.cmd('vCont;c')
    frames, ex = drain(rsp)
    t_traced = time.monotonic() - t0
    out = read_all_fd(outfd)
    calls, csum = calls_of(out)
    check('launch_exit', ex == 'W0', ex)
    check('launch_same_output', calls == calls0 and csum == sum0 and len(calls) == N,
          (len(calls), csum, sum0))
    vals = frame_values(frames)
    check('launch_frame_count', len(frames) == N, len(frames))
    check('launch_frame_values', sorted(vals) == list(range(1, N + 1)) and
          all(vals[i] == [calls[i]] for i in vals), [(i, vals.get(i), calls.get(i)) for i in range(1, 6)])
    check('launch_frame_header', all(f['tp'] == 1 and f['addr'] == addr and f['status'] == 0 and
                                     f['regs'][16] == addr for f in frames), frames[:1])
    check('launch_seq', [f['seq'] for f in frames] == list(range(N)), [f['seq'] for f in frames][:10])
    # The ticker thread never stopped while the worker was being traced.
    ticks = ticks_of(out)
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    check('launch_others_run', ticks and max(gaps) < 100, max(gaps) if gaps else None)
    check('launch_not_serialized', t_traced < t_untraced * 1.5 + 1.0, (t_traced, t_untraced))
    p.stdin.close()
    p.wait(10)
    print('     untraced %.2f s, traced %.2f s (%d hits)' % (t_untraced, t_traced, N), flush=True)


def test_condition(N=200, GAP=500):
    addr = nm_addr(STATIC, 'step')
    p, outfd = start_stub([STATIC, str(N), str(GAP)])
    rsp = Rsp(p)
    rsp.handshake()
    rsp.cmd('QTinit')
    check('cond_define', define_tp(rsp, 2, addr, COND_EVEN) == 'OK')
    rsp.cmd('QTStart')
    rsp.cmd('vCont;c')
    frames, ex = drain(rsp)
    calls, _ = calls_of(read_all_fd(outfd))
    vals = frame_values(frames)
    check('cond_filters', ex == 'W0' and sorted(vals) == list(range(2, N + 1, 2)) and
          all(vals[i] == [calls[i]] for i in vals), (ex, sorted(vals)[:5], len(frames)))
    check('cond_hit_count', [f['hits'] for f in frames] == list(range(1, N // 2 + 1)),
          [f['hits'] for f in frames][:5])
    p.stdin.close()
    p.wait(10)


def test_detach(N=3000, GAP=1000):
    addr = nm_addr(STATIC, 'step')
    orig = elf_bytes(STATIC, addr, 16)
    _, out0, _ = run_untraced(STATIC, 50, 0)
    p, outfd = start_stub([STATIC, str(N), str(GAP)])
    rsp = Rsp(p)
    rsp.handshake()
    rsp.cmd('QTinit')
    define_tp(rsp, 1, addr)
    rsp.cmd('QTStart')
    pid = prog_pid(p)
    rsp.cmd('vCont;c')
    frames, _ = drain(rsp, until_exit=False, stop_after=20)
    patched = proc_bytes(pid, addr, 16)
    check('detach_patched', patched[0] == 0xcc and patched[1:] == orig[1:], patched.hex())
    check('detach_reply', rsp.cmd('D') == 'OK')
    rc = p.wait(10)
    check('detach_stub_exits', rc == 0, rc)
    check('detach_restored', proc_bytes(pid, addr, 16) == orig, proc_bytes(pid, addr, 16).hex())
    status = open('/proc/%d/status' % pid).read()
    check('detach_untraced', 'TracerPid:\t0' in status, [l for l in status.splitlines() if 'Tracer' in l])
    st = reap(pid, 30)
    out = read_all_fd(outfd)
    calls, csum = calls_of(out)
    acc = 0
    for i in range(1, N + 1):
        acc += i * 7 % 13
    check('detach_program_finishes', st == 0 and len(calls) == N and csum == 'checksum %d' % acc,
          (st, len(calls), csum))


def test_stub_killed(N=40, GAP=100000):
    # A thread that is stopped at an int3 when the stub dies gets the SIGTRAP (the
    # kernel delivers it on the tracer's exit; a known limit of the ptrace tier): the
    # hits are spaced (100 ms) so that the kill lands between two hits even when this
    # script is slow between its last look and the kill on a loaded machine.
    addr = nm_addr(STATIC, 'step')
    orig = elf_bytes(STATIC, addr, 16)
    p, outfd = start_stub([STATIC, str(N), str(GAP)])
    rsp = Rsp(p)
    rsp.handshake()
    rsp.cmd('QTinit')
    define_tp(rsp, 1, addr)
    rsp.cmd('QTStart')
    pid = prog_pid(p)
    rsp.cmd('vCont;c')
    drain(rsp, until_exit=False, stop_after=5)
    check('killed_patched', proc_bytes(pid, addr, 1) == b'\xcc')
    # Kill between two hits: wait until no thread of the program is in a tracing stop
    # (state 't': the stub is handling a hit), then kill at once. On a loaded machine a
    # hit can stay in the stub for milliseconds; this keeps the kill out of that window.
    def in_trace_stop():
        for tid in os.listdir('/proc/%d/task' % pid):
            try:
                st = open('/proc/%d/task/%s/stat' % (pid, tid)).read()
            except OSError:
                continue
            if st.rsplit(')', 1)[1].split()[0] == 't':
                return True
        return False
    deadline = time.monotonic() + 5
    while in_trace_stop() and time.monotonic() < deadline:
        time.sleep(0.0005)
    p.kill()
    p.wait()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and proc_bytes(pid, addr, 1) == b'\xcc':
        time.sleep(0.01)
    check('killed_watchdog_restores', proc_bytes(pid, addr, 16) == orig, proc_bytes(pid, addr, 16).hex())
    st = reap(pid, 30)
    calls, csum = calls_of(read_all_fd(outfd))
    acc = sum(i * 7 % 13 for i in range(1, N + 1))
    check('killed_program_finishes', st == 0 and len(calls) == N and csum == 'checksum %d' % acc,
          (st, len(calls), csum))


def test_attach(N=300, GAP=1000):
    addr = nm_addr(STATIC, 'step')
    orig = elf_bytes(STATIC, addr, 16)
    prog = subprocess.Popen([STATIC, str(N), str(GAP), 'wait'], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert prog.stdout.readline() == b'ready\n'
    p = subprocess.Popen([STUB, '--attach', str(prog.pid), '--stdio', '--agent', AGENT],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rsp = Rsp(p)
    rsp.handshake()
    rsp.cmd('QTinit')
    check('attach_define', define_tp(rsp, 1, addr) == 'OK')
    t = tier(rsp, 1)
    check('attach_tier', t[0] == 'ptrace' and 'no dlopen in the target' in t[1], t)
    rsp.cmd('QTStart')
    prog.stdin.write(b'go\n')
    prog.stdin.flush()
    frames, ex = drain(rsp)
    out = prog.stdout.read().decode()
    rc = prog.wait(10)
    calls, csum = calls_of(out)
    vals = frame_values(frames)
    check('attach_frames', len(frames) == N and all(vals[i] == [calls[i]] for i in vals) and
          sorted(vals) == list(range(1, N + 1)), (len(frames), len(calls)))
    check('attach_exit', rc == 0 and ex == 'W0', (rc, ex))
    p.stdin.close()
    p.wait(10)
    err = p.stderr.read().decode()
    check('attach_message', 'ptrace tier: no dlopen in the target' in err, err)

    # Attach, then detach while the program runs: code restored, program finishes.
    prog = subprocess.Popen([STATIC, '2000', str(GAP), 'wait'], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    prog.stdout.readline()
    p = subprocess.Popen([STUB, '--attach', str(prog.pid), '--stdio', '--agent', AGENT],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rsp = Rsp(p)
    rsp.handshake()
    define_tp(rsp, 1, addr)
    rsp.cmd('QTStart')
    prog.stdin.write(b'go\n')
    prog.stdin.flush()
    drain(rsp, until_exit=False, stop_after=10)
    rsp.cmd('D')
    p.wait(10)
    check('attach_detach_restored', proc_bytes(prog.pid, addr, 16) == orig)
    out = prog.stdout.read().decode()
    check('attach_detach_finishes', prog.wait(30) == 0 and len(calls_of(out)[0]) == 2000)


def insns(path, func):
    """[(addr, text)] of @func from objdump."""
    out = subprocess.run(['objdump', '-d', '--no-show-raw-insn', path], capture_output=True,
                         text=True).stdout
    body = out.split('<%s>:\n' % func, 1)[1].split('\n\n', 1)[0]
    res = []
    for line in body.splitlines():
        a, _, txt = line.partition(':')
        res.append((int(a.strip(), 16), txt.strip()))
    return res


def test_emulation(N=100, GAP=500):
    """Tracepoints on a call, a jcc, a RIP-relative load (out-of-line copy) and a ret:
    each fires once per execution and the program computes the same."""
    w = insns(STATIC, 'worker')
    call = next(a for a, x in w if x.startswith('call') and '<step>' in x)
    jcc = next(a for a, x in w if a > call and x.startswith('j') and not x.startswith('jmp'))
    riprel = next(a for a, x in w if '(%rip)' in x and 'n_calls' in x)
    ret = next(a for a, x in insns(STATIC, 'step') if x.startswith('ret'))
    _, out0, _ = run_untraced(STATIC, N, GAP)
    p, outfd = start_stub([STATIC, str(N), str(GAP)])
    rsp = Rsp(p)
    rsp.handshake()
    rsp.cmd('QTinit')
    for num, a in ((1, call), (2, jcc), (3, riprel), (4, ret)):
        assert rsp.cmd('QTDP:%x:%x:E:0:0-' % (num, a)) == 'OK'
        assert rsp.cmd('QTDP:-%x:%x:R3ffffff' % (num, a)) == 'OK'
    rsp.cmd('QTStart')
    rsp.cmd('vCont;c')
    frames, ex = drain(rsp)
    out = read_all_fd(outfd)
    count = {n: sum(1 for f in frames if f['tp'] == n) for n in (1, 2, 3, 4)}
    check('emulation_counts', ex == 'W0' and count == {1: N, 2: N, 3: N + 1, 4: N}, (ex, count))
    check('emulation_same_output', calls_of(out) == calls_of(out0), calls_of(out)[1])
    # At the call, rsp is the caller's; at step's ret, rsp points at the return address.
    rets = [f for f in frames if f['tp'] == 4]
    check('emulation_ret_regs', all(f['regs'][16] == ret for f in rets))
    p.stdin.close()
    p.wait(10)


def test_dynamic_trap_tier(N=200, GAP=500):
    addr = nm_addr(DYNAMIC, 'step')
    p, outfd = start_stub([DYNAMIC, str(N), str(GAP)])
    rsp = Rsp(p)
    rsp.handshake()
    rsp.cmd('QTinit')
    define_tp(rsp, 1, addr)
    check('dynamic_tier', tier(rsp, 1) == ('trap', 'in-process trap tier (int3)'), tier(rsp, 1))
    rsp.cmd('QTStart')
    rsp.cmd('vCont;c')
    frames, ex = drain(rsp)
    calls, _ = calls_of(read_all_fd(outfd))
    vals = frame_values(frames)
    check('dynamic_same_values', ex == 'W0' and len(frames) == N and sorted(vals) == list(range(1, N + 1)) and
          all(vals[i] == [calls[i]] for i in vals), (ex, len(frames)))
    # Same frame shape as the ptrace tier: REGS + one 4-byte memory block at rsi.
    check('dynamic_same_shape', all(f['regs'] and len(f['mem']) == 1 and not f['err'] for f in frames))
    p.stdin.close()
    p.wait(10)


def main():
    if not os.path.exists(STATIC):
        print('skip: no static libc to build %s' % STATIC)
        print('0 passed, 0 failed')
        return 0
    for t in (test_launch, test_condition, test_emulation, test_detach, test_stub_killed,
              test_attach, test_dynamic_trap_tier):
        try:
            t()
        except Exception as e:  # a crash of one case is a failure, the rest still run
            import traceback
            traceback.print_exc()
            check(t.__name__ + '_crashed', False, repr(e))
    passed = sum(results)
    print('%d passed, %d failed' % (passed, len(results) - passed))
    return 0 if passed == len(results) else 1


if __name__ == '__main__':
    sys.exit(main())
