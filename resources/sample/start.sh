#!/bin/sh
# GET /api/v1/books answers 200 with a body naming the version; GET / is the health check.
# MODE: ok | crash (exits at start) | unhealthy (no health page) | broken (no /api/v1/books)
set -e
mkdir -p /www/api/v1
if [ "$MODE" = crash ]; then
  echo "sample $VERSION: crashing at start on purpose" >&2
  exit 3
fi
[ "$MODE" = unhealthy ] || echo "ok $VERSION" > /www/index.html
[ "$MODE" = broken ] || printf '[{"_id":1,"title":"Continuous Deployment","version":"%s"}]\n' "$VERSION" > /www/api/v1/books
exec httpd -f -p 8080 -h /www
