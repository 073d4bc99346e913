#!/bin/sh
# The seed's serviceA: returns "world!" (v2 and later: a changed body).
case "$VERSION" in
  v1) body='world!' ;;
  *) body='new world!' ;;
esac
printf 'Content-Type: text/plain\r\nX-Version: servicea/%s\r\n\r\n%s' "$VERSION" "$body"
