#!/bin/sh
# The seed's serviceB: calls $dep_endpoint and prepends "Hello " (v2 and later: "Welcome to the ").
# X-Version names this release, X-Dep-Version the release of the dependency that answered.
case "$VERSION" in
  v1) greeting='Hello ' ;;
  *) greeting='Welcome to the ' ;;
esac
headers=$(mktemp)
if body=$(timeout 5 wget -S -q -O - "$dep_endpoint" 2>"$headers"); then
  dep=$(grep -i '^ *x-version:' "$headers" | tr -d '\r' | sed 's/^ *[xX]-[vV]ersion: *//')
  rm -f "$headers"
  printf 'Content-Type: text/plain\r\nX-Version: serviceb/%s\r\nX-Dep-Version: %s\r\n\r\n%s%s' \
    "$VERSION" "$dep" "$greeting" "$body"
else
  rm -f "$headers"
  printf 'Status: 502 Bad Gateway\r\nContent-Type: text/plain\r\nX-Version: serviceb/%s\r\n\r\n' "$VERSION"
  printf 'serviceb %s: %s did not answer\n' "$VERSION" "$dep_endpoint"
fi
