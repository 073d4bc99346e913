#!/usr/bin/env bash
# Run every test: lint, Python unit + integration tests (real dockerd, Consul, nginx),
# and the Groovy steps under JenkinsPipelineUnit. Installs what is missing first.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit $?
export BLUEGREEN_REQUIRE_ALL=1   # a skipped test fails the run: nothing may be skipped

status=0
rm -rf target/surefire-reports .pytest-report.xml
echo "== ruff"
.venv/bin/ruff check pyscripts tests bench scripts || status=1

echo "== pytest"
.venv/bin/python -m pytest --junitxml=.pytest-report.xml "$@"
rc=$?
if [[ $rc == 5 ]]; then
  echo "pytest collected no tests: the test tree is broken" >&2
  status=1
elif [[ $rc != 0 ]]; then
  status=1
fi

echo "== groovy (JenkinsPipelineUnit)"
bash scripts/test-groovy.sh || status=1

.venv/bin/python scripts/test-summary.py .pytest-report.xml
if [[ $status == 0 ]]; then echo "ALL TESTS PASSED"; else echo "TESTS FAILED" >&2; fi
exit $status
