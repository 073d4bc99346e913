#!/usr/bin/env bash
# Install what bench/proxy_scale.py needs beyond scripts/bootstrap.sh: Debian's haproxy (2.6)
# and wrk. Idempotent: what is already installed is skipped. Debian packages need root.
# Debian's haproxy package may start a system haproxy; its default configuration listens on
# nothing, and the bench runs its own with a private configuration.
set -euo pipefail

say() { printf 'bench-deps: %s\n' "$*" >&2; }

. "$(dirname "${BASH_SOURCE[0]}")/debian-packages.sh"
ensure_packages haproxy wrk
say "ready: $(haproxy -v | head -1); wrk $(command -v wrk)"
