#!/usr/bin/env bash
# The demo: start the multi-threaded sample service (tests/targets/inventory.c) under
# nonstop with dap-run, set two logpoints and one snapshot breakpoint, and print what
# arrives while the service keeps running. Installs and builds what is missing first.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
"$top/scripts/build.sh" "$top/build" >/dev/null
src="$top/tests/targets/inventory.c"
line() { grep -n "$1" "$src" | head -1 | cut -d: -f1; }
echo "== nonstop demo: inventory service, 3 worker threads, never stopped =="
echo "   logpoint  inventory.c:$(line TAG_RESTOCK)  every restock: sku, kind (an enum), quantity, shelf label (a string through a pointer)"
echo "   logpoint  inventory.c:$(line TAG_COUNT)  a pointer chain that runs into NULL (an error value, not a crash)"
echo "   snapshot  inventory.c:$(line TAG_WEIGH_RETURN)  when qty == 17 && it->id == 202 (condition evaluated in the target)"
echo
cd "$top/build/tests/targets"
ROUNDS=${ROUNDS:-60} PAUSE_US=${PAUSE_US:-2000} exec "$top/build/bin/dap-run" \
	--logpoint "$src:$(line TAG_RESTOCK):restock {it->sku} kind={it->kind} qty={qty} shelf={s->label}" \
	--logpoint "$src:$(line TAG_COUNT):count={s->count} it->next->next->next->id={it->next->next->next->id}" \
	--snapshot "$src:$(line TAG_WEIGH_RETURN):qty == 17 && it->id == 202" \
	--duration 60 \
	-- ./inventory-O0
