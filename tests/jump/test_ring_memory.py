#!/usr/bin/env python3
"""Ring memory and priority under nonstop-stub: a logpoint hit now and then (1 kHz, ~1.2 KiB frames:
well under a stream) must not leave the pages it wrote backed. The stub's 100 ms trim
punches what it has read (core/agent/agent_proto.c); the program's own account of its
ring mapping (/proc/PID/smaps, Rss of the memfd) is the independent answer, against the
bytes the frames brought. Warming is off (--ring-warm 0) so that only written pages count.

usage: test_ring_memory.py BUILD_DIR"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from nsrsp import RawRsp, parse_frame, qtdp_packets, reply_items, stop_stub, x_act  # noqa: E402

BUILD = os.path.abspath(sys.argv[1])
STUB = os.path.join(BUILD, 'bin', 'nonstop-stub')
AGENT = os.path.join(BUILD, 'lib', 'libnonstop-agent.so')
PROG = os.path.join(BUILD, 'tests', 'ptrace', 'ptrace-loop')
RSP_REG, RSI = 7, 4
X_ACC = bytes([0x26, 0x00, RSI, 0x22, 0x04, 0x0c, 0x27])  # trace 4 bytes at rsi
CALLS, GAP_US = 3000, 1000

results = []


def check(name, ok, detail=''):
    results.append(bool(ok))
    print(('ok   ' if ok else 'FAIL ') + 'test_ring_memory__' + name +
          ('' if ok else '\n     ' + str(detail)[-3000:]), flush=True)
    return ok


def nm_range(path, sym):
    out = subprocess.run(['nm', '-S', path], capture_output=True, text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[3] == sym and f[2] in 'Tt':
            return int(f[0], 16), int(f[0], 16) + int(f[1], 16)
    raise KeyError(sym)


def child_of(pid):
    with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
        kids = f.read().split()
    return int(kids[0]) if kids else None


def nice_of(pid):
    """The nice value of process @pid (its main thread), from /proc/PID/stat."""
    with open('/proc/%d/stat' % pid) as f:
        return int(f.read().rsplit(')', 1)[1].split()[16])


def ring_rss_kb(pid):
    """Rss of the program's mapping of the ring memfd (kB), from its smaps."""
    rss, inside = 0, False
    with open('/proc/%d/smaps' % pid) as f:
        for line in f:
            if '-' in line.split(' ', 1)[0]:
                inside = 'memfd:' in line
            elif inside and line.startswith('Rss:'):
                rss += int(line.split()[1])
    return rss


def main():
    lo, hi = nm_range(PROG, 'step')
    stack = 'M%x,%x,%x' % (RSP_REG, 0, 1024)  # 1 KiB above the stack pointer
    p = subprocess.Popen([STUB, '--stdio', '--hold', '--agent', AGENT, '--ring-warm', '0',
                          '--', PROG, str(CALLS), str(GAP_US)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        # Frames come binary ("b<len>:<bytes>" items), as nonstop-dap asks for them.
        rsp = RawRsp(p)
        check('binary_offered', 'NsFrameBinary+' in rsp.handshake(binary=True).decode())
        rsp.cmd('QTinit')
        for pkt in qtdp_packets(1, lo, None, ':R%x-%x' % (lo, hi),
                                ['R3ffffff', stack, x_act(X_ACC)]):
            assert rsp.cmd(pkt) == b'OK', pkt
        assert rsp.cmd('QTStart') == b'OK'
        info = rsp.cmd('qNsTPInfo:1').decode()
        check('jump_tier', 'tier=jump' in info, info)
        rsp.cmd('vCont;c')
        prog = child_of(p.pid)
        # The stub yields the CPU to the program (--nice, default 10); the program keeps
        # the priority it was started with (ours).
        check('stub_nice', nice_of(p.pid) == os.nice(0) + 10 and nice_of(prog) == os.nice(0),
              (nice_of(p.pid), nice_of(prog), os.nice(0)))
        frames, nbytes, samples, ex, seqs = 0, 0, [], None, []
        deadline = time.monotonic() + 60
        while ex is None and time.monotonic() < deadline:
            r = rsp.cmd('qNsFrames')
            if r == b'OK':
                time.sleep(0.01)
            else:
                for kind, v in reply_items(r):
                    if kind == 'F':
                        seqs.append(parse_frame(v, strict=True)['seq'])
                        frames += 1
                        nbytes += len(v) + 8
                    elif kind in ('W', 'X'):
                        ex = '%s%x' % (kind, v)
            # Once more than 1.5 MiB went through the ring, what stays backed of it.
            if ex is None and nbytes > 1536 * 1024 and len(samples) < 5:
                samples.append((nbytes, ring_rss_kb(prog)))
                time.sleep(0.15)
        check('all_frames', frames == CALLS and ex == 'W0', (frames, ex))
        # One thread: its hits' sequence numbers, in order, each once.
        check('frames_in_order', seqs == list(range(seqs[0], seqs[0] + CALLS)) if seqs else False,
              seqs[:5])
        # Ring header pages and a template page are always in; the trim every 100 ms
        # keeps the rest to what the stub has not read yet plus ~100-200 ms of hits
        # (~250 KiB; more if the stub, at nice 10, waits for the CPU). Without the
        # trim: all that went through (> 1.5 MB when the samples are taken).
        worst = max((kb for _, kb in samples), default=None)
        print('ring mapping Rss (kB) after N bytes of frames: %s' % samples)
        check('pages_given_back', samples and worst < 1024,
              'Rss %s kB with %s bytes written' % (worst, samples[-1][0] if samples else 0))
    finally:
        stop_stub(p)
    print('%d passed, %d failed' % (results.count(True), results.count(False)))
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
