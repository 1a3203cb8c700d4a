#!/usr/bin/env bash
# Code reachable from the trap handler lives in *_sig.c files (STYLE.md, "No malloc on
# the hot path"). Fail if any of their objects, as built for the agent, calls something
# that is not async-signal-safe.
set -euo pipefail
build=${1:?usage: check-sig-symbols.sh BUILD_DIR}
forbidden='^(malloc|calloc|realloc|free|posix_memalign|aligned_alloc|strdup|strndup|printf|fprintf|sprintf|snprintf|vsnprintf|vfprintf|puts|fputs|fwrite|fflush|perror|abort|exit|__assert_fail|pthread_mutex_lock|pthread_mutex_unlock|pthread_mutex_trylock|pthread_rwlock_rdlock|pthread_rwlock_wrlock|dlopen|dlsym|syslog|localtime|gmtime|strerror|backtrace|cs_open|cs_disasm)$'
objs=$(find "$build" -path '*agent*' -name '*_sig.c.o' | sort)
[ -n "$objs" ] || { echo "no *_sig.c.o objects under $build"; exit 1; }
bad=0
n=0
for o in $objs; do
	n=$((n + 1))
	hits=$(nm -u "$o" | awk '{print $2}' | sed 's/@.*//' | grep -E "$forbidden" || true)
	if [ -n "$hits" ]; then
		echo "FAIL $o calls: $(echo $hits)"
		bad=$((bad + 1))
	else
		echo "ok   $(basename "$o"): $(nm -u "$o" | awk '{print $2}' | tr '\n' ' ')"
	fi
done
echo "$((n - bad)) passed, $bad failed"
[ "$bad" -eq 0 ]
