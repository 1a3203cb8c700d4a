#!/usr/bin/env bash
# Install what nonstop needs on Debian 12 (idempotent; skips apt when all is present).
set -euo pipefail
pkgs=(build-essential cmake pkg-config gdb binutils python3 python3-jsonschema
      libdwarf-dev libelf-dev libcapstone-dev libcjson-dev libunwind-dev libssl-dev)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	sudo_cmd=()
	[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
	"${sudo_cmd[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
