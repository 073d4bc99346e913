#!/usr/bin/env bash
# Install and start everything bluegreen's demo, tests and benchmarks need. Idempotent:
# what is already there is skipped. Debian packages need root (as on the CI machine).
#   docker.io nginx busybox-static wrk hey iproute2 libnginx-mod-http-lua lua-cjson (Debian) | .venv with bluegreen[test]
#   the Consul agent (built from the Go module proxy, cached in ~/.cache/bluegreen) | dockerd
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*" >&2; }

# 1. Debian packages
. scripts/debian-packages.sh
ensure_packages docker.io nginx busybox-static wrk hey iproute2 libnginx-mod-http-lua lua-cjson
# Debian's nginx package starts a system nginx on port 80; the project never uses it.

# 2. Python virtualenv with the package (editable) and the test tools
PY="${PYTHON:-python3}"
stamp=".venv/.bluegreen-installed"
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  say "installing bluegreen[test] into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

# 3. The Consul agent (cached outside the repo; the first build takes a few minutes)
consul_bin=$(bash scripts/build-consul.sh)
say "consul: $consul_bin"

# 4. dockerd when no engine answers, and 5. the sample images (built locally from static
# busybox, no registry): the sandbox module does both, as it does for the tests.
.venv/bin/python -c 'from bluegreen_dev.sandbox import build_sample_images, ensure_dockerd
ensure_dockerd()
build_sample_images()' || { say "Docker is not usable; see ~/.cache/bluegreen/dockerd.log"; exit 3; }
say "ready"
