#!/usr/bin/env bash
# Build and run every test: the normal build, then the same suite under ASan+UBSan
# (the agent and the test targets are never sanitized: they run inside target programs).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
"$top/scripts/build.sh" "$top/build"
(cd "$top/build" && ctest --output-on-failure -j2)
# The independent acceptance checks, when shared/ sits beside the clone (as in CI).
if [ -f "$top/../shared/accept/skeleton.py" ]; then
	python3 "$top/../shared/accept/skeleton.py" "$top/build"
fi
"$top/scripts/build.sh" "$top/build-asan" -DNS_SANITIZE=ON
(cd "$top/build-asan" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j2)
