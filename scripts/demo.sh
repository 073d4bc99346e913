#!/usr/bin/env bash
# The main job: a full local blue -> green -> blue cycle of the sample service behind a
# private nginx, printing each step. Installs what is missing first (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m bluegreen_dev.demo "$@"
