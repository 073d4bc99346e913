#!/bin/sh
# Install the bluegreen CLI into $BLUEGREEN_VENV from $BLUEGREEN_PIP_SPEC when it is missing.
# Run by the bluegreenInstall step; takes its inputs from the environment only.
set -eu
if "$BLUEGREEN_VENV/bin/bluegreen" --version >/dev/null 2>&1; then
  echo "bluegreen: $("$BLUEGREEN_VENV/bin/bluegreen" --version) already in $BLUEGREEN_VENV"
  exit 0
fi
python3 -m venv "$BLUEGREEN_VENV"
"$BLUEGREEN_VENV/bin/pip" install --quiet --disable-pip-version-check "$BLUEGREEN_PIP_SPEC"
"$BLUEGREEN_VENV/bin/bluegreen" --version
