#!/usr/bin/env python3
"""Cost per tracepoint hit in each tier, and the attach pause.

The same hot loop (tests/ptrace/loop.c: step(i, &acc) called N times, the program
times its own loop) runs uninstrumented, then with a logpoint-like tracepoint on
step() (R + one X action reading 4 bytes through a register) in the in-process trap
tier (dynamic build, the agent) and in the ptrace tier (static build). ns per hit =
(traced loop time - uninstrumented loop time) / hits. Then nonstop-stub --attach is
run 5 times on a running program and the pause it reports is summarised.

usage: bench_tiers.py BUILD_DIR   (not a ctest test: timings depend on the machine)"""
import os
import re
import statistics
import subprocess
import sys
import time

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else 'build')
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'ptrace'))
sys.argv = [sys.argv[0], BUILD]
import test_ptrace as t  # noqa: E402  (RSP client, frame parser, paths)

N_TRAP = 200000
N_PTRACE = 20000


def loop_ns(text):
    m = re.search(r'elapsed_ns (\d+)', text)
    return int(m.group(1)) if m else None


def untraced(prog, n):
    out = subprocess.run([prog, str(n), '0'], capture_output=True, text=True, timeout=60).stdout
    return loop_ns(out)


def traced(prog, n):
    addr = t.nm_addr(prog, 'step')
    p, outfd = t.start_stub([prog, str(n), '0'])
    rsp = t.Rsp(p)
    rsp.handshake()
    rsp.cmd('QTinit')
    t.define_tp(rsp, 1, addr)
    tier = t.tier(rsp, 1)[0]
    rsp.cmd('QTStart')
    rsp.cmd('vCont;c')
    frames, drops, ex = 0, 0, None
    deadline = time.monotonic() + 60
    while ex is None and time.monotonic() < deadline:
        r = rsp.cmd('qNsFrames')
        if r == 'OK':
            time.sleep(0.005)
            continue
        for item in r.split(';'):
            if item.startswith('F'):
                frames += 1
            elif item.startswith('L'):
                drops += int(item[1:], 16)
            elif item[:1] in ('W', 'X'):
                ex = item
    out = t.read_all_fd(outfd, 10)
    p.stdin.close()
    p.wait(10)
    return tier, loop_ns(out), frames, drops


def attach_pauses(times=5):
    prog = subprocess.Popen([t.DYNAMIC, '1000000', '1000'], stdout=subprocess.DEVNULL)
    time.sleep(0.2)
    pauses = []
    try:
        for _ in range(times):
            p = subprocess.Popen([t.STUB, '--attach', str(prog.pid), '--stdio', '--agent', t.AGENT],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            line = p.stderr.readline().decode()
            m = re.search(r'in ([0-9.]+) ms', line)
            if m:
                pauses.append(float(m.group(1)))
            else:
                print('attach failed: ' + line.strip())
            p.stdin.close()
            p.wait(10)
    finally:
        prog.kill()
        prog.wait()
    return pauses


def main():
    base_dyn = untraced(t.DYNAMIC, N_TRAP)
    tier, trap_ns, frames, drops = traced(t.DYNAMIC, N_TRAP)
    trap_hit = (trap_ns - base_dyn) / N_TRAP
    print('uninstrumented (dynamic): %.1f ns per call (%d calls)' % (base_dyn / N_TRAP, N_TRAP))
    print('%s tier:   %8.0f ns per hit (%d frames, %d dropped)' % (tier, trap_hit, frames, drops))
    if os.path.exists(t.STATIC):
        base_st = untraced(t.STATIC, N_PTRACE)
        tier, pt_ns, frames, drops = traced(t.STATIC, N_PTRACE)
        pt_hit = (pt_ns - base_st) / N_PTRACE
        print('%s tier: %8.0f ns per hit (%d frames, %d dropped)' % (tier, pt_hit, frames, drops))
        print('ratio ptrace / in-process trap: %.1f' % (pt_hit / trap_hit))
    else:
        print('ptrace tier: skipped (no static libc)')
    pauses = attach_pauses()
    if pauses:
        print('attach pause (%d runs): first %.2f ms, min %.2f ms, median %.2f ms' %
              (len(pauses), pauses[0], min(pauses), statistics.median(pauses)))


if __name__ == '__main__':
    main()
