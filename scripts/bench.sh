#!/usr/bin/env bash
# Install what the benchmarks need, build, and run every benchmark (tests/bench/).
# Prints numbers only: it never fails because of them (see tests/bench/README.md).
#
#   scripts/bench.sh [BUILD_DIR] [--no-install] [--no-build] [--quick]
#
# --no-install: skip apt-get (gdb, gdbserver, bpftrace, dpkg-dev, a deb-src line for
# `apt-get source`); --no-build: use BUILD_DIR as it is; --quick: fewer hits per run.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build
install=1 build=1 quick=()
for a in "$@"; do
	case $a in
	--no-install) install=0 ;;
	--no-build) build=0 ;;
	--quick) quick=(--quick) ;;
	-*) echo "usage: $0 [BUILD_DIR] [--no-install] [--no-build] [--quick]" >&2; exit 2 ;;
	*) dir=$(realpath -m "$a") ;;
	esac
done

if [ "$install" = 1 ]; then
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		echo "bench: not root or no apt-get: not installing gdb, gdbserver, bpftrace"
	else
		# `apt-get source` (bench_coverage.py) needs deb-src entries.
		if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
			if [ -f /etc/apt/sources.list.d/debian.sources ]; then
				sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
					>/etc/apt/sources.list.d/nonstop-bench-src.sources
			elif [ -f /etc/apt/sources.list ]; then
				grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
					>/etc/apt/sources.list.d/nonstop-bench-src.list
			fi
		fi
		apt-get update -qq || echo "bench: apt-get update failed"
		pkgs=(gdb gdbserver bpftrace dpkg-dev)
		if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
			for p in "${pkgs[@]}"; do
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null ||
					echo "bench: $p not available (its rows will say so)"
			done
		fi
	fi
fi

if [ "$build" = 1 ]; then
	"$top/scripts/build.sh" "$dir" || { echo "bench: build failed"; exit 1; }
fi

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
echo "== tests/bench/bench_tiers.py"
python3 "$top/tests/bench/bench_tiers.py" "$dir" || echo "bench: bench_tiers.py failed"
echo
echo "== tests/bench/bench_hotloop.py"
python3 "$top/tests/bench/bench_hotloop.py" "$dir" "${quick[@]}" || echo "bench: bench_hotloop.py failed"
echo
echo "== tests/bench/bench_coverage.py"
python3 "$top/tests/bench/bench_coverage.py" "$dir" || echo "bench: bench_coverage.py failed"
echo
echo "== tests/bench/bench_server.py"
python3 "$top/tests/bench/bench_server.py" "$dir" "${quick[@]}" || echo "bench: bench_server.py failed"
exit 0
