#!/usr/bin/env bash
# Install what bench/proxy_scale.py needs beyond scripts/bootstrap.sh: Debian's haproxy (2.6)
# and wrk. Idempotent: what is already installed is skipped. Debian packages need root.
# Debian's haproxy package may start a system haproxy; its default configuration listens on
# nothing, and the bench runs its own with a private configuration.
set -euo pipefail

say() { printf 'bench-deps: %s\n' "$*" >&2; }

want=(haproxy wrk)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
say "ready: $(haproxy -v | head -1); wrk $(command -v wrk)"
