#!/usr/bin/env bash
# Rerun every benchmark and rewrite docs/benchmarks.md and docs/bench-switches.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -c 'import matplotlib' 2>/dev/null || .venv/bin/pip install -q -e '.[test,bench]'
exec .venv/bin/python bench/benchmarks.py "$@"
