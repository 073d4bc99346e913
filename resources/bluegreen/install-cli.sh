#!/bin/sh
# Install the bluegreen CLI into $BLUEGREEN_VENV from $BLUEGREEN_PIP_SPEC (the library's own
# archive written by bluegreenInstall, or a pip spec) unless that very source is installed there.
# Run by the bluegreenInstall step; takes its inputs from the environment only.
set -eu
stamp=$BLUEGREEN_PIP_SPEC
if [ -f "$BLUEGREEN_PIP_SPEC" ]; then
  stamp=$(sha256sum "$BLUEGREEN_PIP_SPEC" | cut -d' ' -f1)
fi
if [ "$(cat "$BLUEGREEN_VENV/.bluegreen-source" 2>/dev/null)" = "$stamp" ] &&
   "$BLUEGREEN_VENV/bin/bluegreen" --version >/dev/null 2>&1; then
  echo "bluegreen: $("$BLUEGREEN_VENV/bin/bluegreen" --version) already in $BLUEGREEN_VENV"
  exit 0
fi
[ -x "$BLUEGREEN_VENV/bin/pip" ] || python3 -m venv "$BLUEGREEN_VENV"
rm -f "$BLUEGREEN_VENV/.bluegreen-source"
"$BLUEGREEN_VENV/bin/pip" uninstall --quiet --yes bluegreen >/dev/null 2>&1 || true
"$BLUEGREEN_VENV/bin/pip" install --quiet --disable-pip-version-check "$BLUEGREEN_PIP_SPEC"
"$BLUEGREEN_VENV/bin/bluegreen" --version
printf '%s\n' "$stamp" > "$BLUEGREEN_VENV/.bluegreen-source"
