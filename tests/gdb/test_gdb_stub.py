#!/usr/bin/env python3
"""Stock gdb against nonstop-stub (with the real agent): gdb connects in non-stop mode,
lists the program's threads as running, and reads its memory through the stub while
the program keeps running (its own counters advance between two reads).

usage: test_gdb_stub.py BUILD_DIR"""
import os
import re
import shutil
import subprocess
import sys

BUILD = os.path.abspath(sys.argv[1])
STUB = os.path.join(BUILD, 'bin', 'nonstop-stub')
PROG = os.path.join(BUILD, 'tests', 'targets', 'inventory-nopie')


def main():
    if not shutil.which('gdb'):
        print('gdb not installed: skipped\n0 passed, 0 failed')
        return 0
    script = '\n'.join([
        'set non-stop on', 'set pagination off', 'set confirm off',
        'target remote | %s --stdio -- %s' % (STUB, PROG),
        'shell sleep 0.3',
        'info threads',
        'print restocked[0]',
        'shell sleep 0.5',
        'print restocked[0]',
        'print sizeof(struct item)',
        'x/2xw &restocked',
        'kill',
    ])
    with open('/tmp/nonstop-gdb-test.gdb', 'w') as f:
        f.write(script + '\n')
    env = dict(os.environ, ROUNDS='100000', PAUSE_US='1000')
    p = subprocess.run(['gdb', '-nx', '-batch', '-x', '/tmp/nonstop-gdb-test.gdb', PROG], capture_output=True,
                       text=True, env=env, timeout=120)
    out = p.stdout + p.stderr
    results = []

    def check(name, ok):
        results.append(ok)
        print(('ok   ' if ok else 'FAIL ') + 'test_gdb_stub__' + name + ('' if ok else '\n' + out[-2000:]))

    threads = re.findall(r'Thread \d+\.\d+\s+\(running\)', out)
    check('four_threads_all_running', len(threads) == 4)
    vals = [int(v) for v in re.findall(r'^\$\d+ = (\d+)$', out, re.M)]
    check('memory_reads_through_stub_while_running', len(vals) >= 2 and 0 < vals[0] < vals[1])
    check('types_from_local_debug_info', '= 40' in out)
    print('%d passed, %d failed' % (sum(results), len(results) - sum(results)))
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
