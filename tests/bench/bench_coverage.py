#!/usr/bin/env python3
"""Which share of real code sites the jump-pad tier would take.

For each program: every is_stmt address of its DWARF line table (objdump
--dwarf=decodedline, an independent reader: these are the addresses a line breakpoint
can resolve to) and every function entry is checked with the agent's own eligibility
test (ns_arch_pad_window over the function and its .cold part, then ns_arch_pad_emit),
run on the file's bytes by a small tool (tests/bench/pad_coverage.c) that this script
compiles against BUILD_DIR's libns_arch.a and capstone. Functions come from the symbol
table (nm -S; "foo.cold" is a part of foo). Prints the share per program and the
reasons for the rest.

Programs: every tests/targets program (BUILD_DIR/tests/targets), the hot-loop target
and one larger real C program built from its Debian source package with -O2 -g (lz4,
`apt-get source lz4`, needs a deb-src line; skipped with the reason when the source
cannot be fetched). Sources are cached in ~/.cache/nonstop-bench.

usage: bench_coverage.py BUILD_DIR"""
import bisect
import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, '..', '..'))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(TOP, 'build'))
CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'nonstop-bench')
DEB_SOURCE = 'lz4'


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build_tool(tmp):
    exe = os.path.join(tmp, 'pad_coverage')
    libs = [os.path.join(BUILD, 'core', 'arch', 'libns_arch.a'),
            os.path.join(BUILD, 'core', 'base', 'libns_base.a')]
    missing = [x for x in libs if not os.path.exists(x)]
    if missing:
        return None, 'missing %s (build ns_arch and ns_base first)' % ', '.join(missing)
    cmd = ['gcc', '-O1', '-g', '-I', os.path.join(TOP, 'core'), '-o', exe,
           os.path.join(HERE, 'pad_coverage.c')] + libs + ['-lcapstone']
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, 'cannot build pad_coverage: ' + r.stderr.strip()[-500:]
    return exe, None


def functions(path):
    """[(lo, hi, name)] sorted, and {name: [(lo, hi)] of .cold parts}."""
    out = subprocess.run(['nm', '-S', '--defined-only', path], capture_output=True,
                         text=True).stdout
    funcs, cold, seen = [], collections.defaultdict(list), set()
    for line in out.splitlines():
        f = line.split()
        if len(f) != 4 or f[2] not in 'TtWw':
            continue
        lo, size, name = int(f[0], 16), int(f[1], 16), f[3]
        if size == 0 or lo in seen:
            continue
        seen.add(lo)
        m = re.match(r'(.*)\.cold(\.\d+)?$', name)
        if m:
            cold[m.group(1)].append((lo, lo + size))
        funcs.append((lo, lo + size, name))
    funcs.sort()
    return funcs, cold


def stmt_addresses(path):
    out = subprocess.run(['objdump', '--dwarf=decodedline', path], capture_output=True,
                         text=True).stdout
    addrs = set()
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[-1] == 'x':
            for tok in f[1:]:
                if tok.startswith('0x'):
                    addrs.add(int(tok, 16))
                    break
    return sorted(addrs)


def check(tool, path, sites):
    """{addr: (ok, reason)} for @sites, grouped by the function holding them."""
    funcs, cold = functions(path)
    los = [f[0] for f in funcs]
    byfunc = collections.defaultdict(list)
    result = {}
    for a in sites:
        i = bisect.bisect_right(los, a) - 1
        if i < 0 or a >= funcs[i][1]:
            result[a] = (False, 'not inside a function symbol')
            continue
        byfunc[i].append(a)
    lines = []
    for i, addrs in sorted(byfunc.items()):
        lo, hi, name = funcs[i]
        m = re.match(r'(.*)\.cold(\.\d+)?$', name)
        if m:
            # a site in a .cold part: that part first, then the body and other parts
            body = [(f[0], f[1]) for f in funcs if f[2] == m.group(1)]
            parts = [(lo, hi)] + body + [p for p in cold.get(m.group(1), []) if p[0] != lo]
        else:
            parts = [(lo, hi)] + cold.get(name, [])
        lines.append('F ' + ' '.join('%x %x' % p for p in parts[:8]))
        lines.extend('S %x' % a for a in addrs)
    r = subprocess.run([tool, path], input='\n'.join(lines) + '\n', capture_output=True,
                       text=True, timeout=600)
    for line in r.stdout.splitlines():
        addr, _, rest = line.partition(' ')
        verdict, _, why = rest.partition(' ')
        # ok: "LEN NINSNS" (bytes and instructions displaced); no: the reason
        result[int(addr, 16)] = (verdict == 'ok', why.split('\t')[0])
    for a in sites:
        result.setdefault(a, (False, 'not checked: ' + (r.stderr.strip() or 'tool failed')))
    return result


def summarise(name, tool, path):
    sites = stmt_addresses(path)
    funcs, _ = functions(path)
    # entries of functions the line table covers (not crt's _start, _init, ...)
    entries = sorted({f[0] for f in funcs if '.cold' not in f[2] and
                      bisect.bisect_left(sites, f[0]) < len(sites) and
                      sites[bisect.bisect_left(sites, f[0])] < f[1]})
    res = check(tool, path, sorted(set(sites) | set(entries)))
    out = {'name': name}
    for kind, addrs in (('is_stmt', sites), ('entries', entries)):
        ok = sum(1 for a in addrs if res[a][0])
        reasons = collections.Counter(res[a][1] for a in addrs if not res[a][0])
        out[kind] = (ok, len(addrs), reasons)
    # Eligible line addresses whose window is one instruction: patched without moving
    # any thread (docs/jump-pads.md, step 4).
    out['one_insn'] = sum(1 for a in sites if res[a][0] and res[a][1].split()[1:] == ['1'])
    return out


def deb_program(tmp):
    """Build the Debian source package's program with -O2 -g: (path, None) or (None, why)."""
    src_root = os.path.join(CACHE, 'src')
    os.makedirs(src_root, exist_ok=True)
    dirs = sorted(glob.glob(os.path.join(src_root, DEB_SOURCE + '-*/')))
    if not dirs:
        if not shutil.which('apt-get') or not shutil.which('dpkg-source'):
            return None, 'apt-get source needs apt-get and dpkg-dev'
        r = subprocess.run(['apt-get', 'source', '-q', DEB_SOURCE], cwd=src_root,
                           capture_output=True, text=True, timeout=300)
        dirs = sorted(glob.glob(os.path.join(src_root, DEB_SOURCE + '-*/')))
        if r.returncode != 0 or not dirs:
            why = (r.stderr.strip().splitlines() or ['failed'])[-1]
            return None, 'apt-get source %s failed: %s (a deb-src line is needed)' % (
                DEB_SOURCE, why)
    src = dirs[-1]
    exe = os.path.join(CACHE, DEB_SOURCE + '-O2')
    if not os.path.exists(exe):
        # lz4's CLI with its library compiled in (Debian's build links the shared liblz4).
        files = glob.glob(os.path.join(src, 'lib', '*.c')) + glob.glob(
            os.path.join(src, 'programs', '*.c'))
        r = subprocess.run(['gcc', '-O2', '-g', '-I', os.path.join(src, 'lib'), '-o', exe] +
                           sorted(files) + ['-lpthread'], capture_output=True, text=True)
        if r.returncode != 0:
            return None, 'build failed: ' + r.stderr.strip()[-300:]
    return exe, os.path.basename(src.rstrip('/'))


def main():
    tmp = tempfile.mkdtemp(prefix='ns-cov-')
    try:
        tool, err = build_tool(tmp)
        if err:
            print('coverage: skipped: ' + err)
            return 0
        progs = []
        tdir = os.path.join(BUILD, 'tests', 'targets')
        for p in sorted(glob.glob(os.path.join(tdir, '*'))):
            if os.path.isfile(p) and (os.access(p, os.X_OK) or p.endswith('.so')):
                with open(p, 'rb') as f:
                    if f.read(4) == b'\x7fELF':
                        progs.append((os.path.basename(p), p))
        if not progs:
            print('(no tests/targets programs in %s: build them for their rows)' % tdir)
        hl = os.path.join(tmp, 'hotloop-O2')
        subprocess.run(['gcc', '-O2', '-g', '-o', hl, os.path.join(HERE, 'hotloop.c')],
                       check=True)
        progs.append(('hotloop-O2', hl))
        log('fetching/building %s from its Debian source package...' % DEB_SOURCE)
        exe, what = deb_program(tmp)
        deb_note = None
        if exe:
            progs.append(('%s (%s, -O2 -g)' % (DEB_SOURCE, what), exe))
        else:
            deb_note = '%s: skipped: %s' % (DEB_SOURCE, what)
        rows = []
        for name, path in progs:
            log('checking %s...' % name)
            rows.append(summarise(name, tool, path))
        report(rows, deb_note)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(rows, deb_note):
    print()
    print('Jump-pad eligibility (the agent\'s checks: ns_arch_pad_window + ns_arch_pad_emit)')
    print()
    hdr = '%-34s %22s %22s' % ('program', 'is_stmt addresses', 'function entries')
    print(hdr)
    print('-' * len(hdr))
    tot = collections.Counter()
    for r in rows:
        cells = []
        for kind in ('is_stmt', 'entries'):
            ok, n, _ = r[kind]
            tot[kind + '_ok'] += ok
            tot[kind] += n
            cells.append('%d/%d %5.1f%%' % (ok, n, 100.0 * ok / n if n else 0))
        print('%-34s %22s %22s' % (r['name'], cells[0], cells[1]))
    print('%-34s %22s %22s' % ('all', '%d/%d %5.1f%%' % (
        tot['is_stmt_ok'], tot['is_stmt'], 100.0 * tot['is_stmt_ok'] / max(1, tot['is_stmt'])),
        '%d/%d %5.1f%%' % (tot['entries_ok'], tot['entries'],
                           100.0 * tot['entries_ok'] / max(1, tot['entries']))))
    if deb_note:
        print(deb_note)
    print()
    print('Eligible is_stmt addresses whose window is one instruction (patched without '
          'signalling any thread):')
    print('  ' + ', '.join('%s %d/%d %.0f%%' % (r['name'], r['one_insn'], r['is_stmt'][0],
                                               100.0 * r['one_insn'] / max(1, r['is_stmt'][0]))
                           for r in rows))
    print()
    print('Why the other is_stmt addresses are not eligible (they run in the trap tier):')
    for r in rows:
        ok, n, reasons = r['is_stmt']
        if n == ok:
            continue
        print('  %s (%d):' % (r['name'], n - ok))
        for why, cnt in reasons.most_common(8):
            print('    %6d  %5.1f%%  %s' % (cnt, 100.0 * cnt / n, why))
    print()
    print('Function entries not eligible:')
    for r in rows:
        ok, n, reasons = r['entries']
        if n == ok:
            continue
        print('  %s: %s' % (r['name'], '; '.join('%d %s' % (c, w) for w, c in
                                                  reasons.most_common(4))))


if __name__ == '__main__':
    sys.exit(main())
