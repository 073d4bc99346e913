#!/usr/bin/env bash
# The Groovy steps under JenkinsPipelineUnit 1.1 / Groovy 2.4 (Maven Central only).
# The end-to-end test runs blueGreenDeploy's sh calls for real: it gets a sandbox
# (dockerd, Consul agent, nginx) started here and the CLI from .venv. Tests: tests/groovy/
# (not src/: a shared library's src/ is the class path of every pipeline that loads it).
set -uo pipefail
cd "$(dirname "$0")/.."
state=$(mktemp -d /tmp/bluegreen-groovy.XXXXXX)
.venv/bin/python -m bluegreen_dev.sandbox up "$state" >/dev/null || { echo "sandbox did not start" >&2; exit 3; }
trap '.venv/bin/python -m bluegreen_dev.sandbox down "$state"; rm -rf "$state"' EXIT
export BLUEGREEN_SANDBOX_ENV="$state/env.json" BLUEGREEN_CLI="$PWD/.venv/bin/bluegreen"
start=$(date +%s)
mvn -B --no-transfer-progress test "$@" | grep -v "^Loading shared library"
rc=${PIPESTATUS[0]}
echo "groovy tests: $(( $(date +%s) - start ))s"
exit $rc
