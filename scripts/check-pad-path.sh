#!/usr/bin/env bash
# The jump pads save no vector, x87 or MXCSR state (core/arch/arch.h, the collector
# contract), so no code a pad calls may use them. Checks, on libnonstop-agent.so as
# linked and on the objects built for the hit path (core/agent/CMakeLists.txt,
# ns_agentsig):
#  - no function defined in those objects uses an SSE/AVX/AVX-512/MMX/x87 register;
#  - the objects call no libc string function (glibc's are vector-register ifuncs)
#    except memcpy/memset/memchr, which the library defines itself (local symbols);
#  - the library's memcpy/memset/memchr are those local ones.
set -euo pipefail
build=${1:?usage: check-pad-path.sh BUILD_DIR}
so=$build/lib/libnonstop-agent.so
objs=$(find "$build" -path '*ns_agentsig.dir*' -name '*.o' | sort)
[ -n "$objs" ] || { echo "no ns_agentsig objects under $build"; exit 1; }
[ -f "$so" ] || { echo "no $so"; exit 1; }
bad=0
pass=0
# Calls out of the hit path: only these (syscall wrappers and the vDSO clock, all
# general-register code; checked below in libc too).
allowed='^(_GLOBAL_OFFSET_TABLE_|sigemptyset|syscall|clock_gettime|__errno_location|raise|sigaction|memcpy|memset|memchr|__stack_chk_fail)$'
for o in $objs; do
	ext=$(nm -u "$o" | awk '{print $2}' | sed 's/@.*//' | grep -v '^ns_' | grep -vE "$allowed" || true)
	if [ -n "$ext" ]; then
		echo "FAIL $(basename "$o") calls: $(echo $ext)"
		bad=$((bad + 1))
	else
		pass=$((pass + 1))
	fi
done
# Functions defined by those objects, checked in the linked library.
funcs=$(for o in $objs; do nm --defined-only "$o" | awk '$2 ~ /^[tT]$/ {print $3}'; done | sort -u)
nf=$(echo "$funcs" | wc -l)
regs='%(xmm|ymm|zmm|mm)[0-9]+|%st(\(|\b)|\b(fxsave|fxrstor|xsave|xrstor|ldmxcsr|stmxcsr|emms|fld|fst|fstp|fild|fistp)'
hits=$(objdump -d --no-show-raw-insn "$so" | awk -v list="$funcs" '
	BEGIN { n = split(list, a, "\n"); for (i = 1; i <= n; i++) want[a[i]] = 1 }
	/^[0-9a-f]+ <.*>:$/ { name = $2; gsub(/[<>:]/, "", name); on = (name in want); next }
	on && NF { print name ": " $0 }' | grep -E "$regs" || true)
if [ -n "$hits" ]; then
	echo "FAIL vector/x87 instructions in the hit path:"
	echo "$hits" | head -20
	bad=$((bad + 1))
else
	pass=$((pass + 1))
	echo "ok   $nf hit-path functions in $(basename "$so") use general registers only"
fi
syms=$(nm "$so")
for f in memcpy memset memchr; do
	if echo "$syms" | grep -E "^[0-9a-f]+ t $f$" >/dev/null; then
		pass=$((pass + 1))
	else
		echo "FAIL $(basename "$so") does not define its own local $f"
		bad=$((bad + 1))
	fi
done
# The libc functions the hit path calls: no vector registers either.
libc=$(ldd "$so" | awk '/libc\.so/ {print $3}')
if [ -n "$libc" ]; then
	for f in syscall clock_gettime __errno_location; do
		dis=$(gdb -batch -ex "disassemble $f" "$libc" 2>/dev/null || true)
		if [ -z "$dis" ] || echo "$dis" | grep -E "$regs" >/dev/null; then
			echo "FAIL $f in $libc: vector registers (or cannot disassemble)"
			bad=$((bad + 1))
		else
			pass=$((pass + 1))
		fi
	done
fi
echo "$pass passed, $bad failed"
[ "$bad" -eq 0 ]
