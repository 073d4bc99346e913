#!/bin/sh
# GET /api/v1/books answers 200 with a body naming the version; GET / is the health check.
# MODE: ok | crash (exits at start) | unhealthy (no health page) | broken (no /api/v1/books)
#       | flaky (as ok, and GET /cgi-bin/fail answers 500: a share of failing requests)
set -e
mkdir -p /www/api/v1
if [ "$MODE" = crash ]; then
  echo "sample $VERSION: crashing at start on purpose" >&2
  exit 3
fi
if [ "$MODE" = flaky ]; then
  mkdir -p /www/cgi-bin
  printf '#!/bin/sh\nprintf "Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nfailing on purpose\\n"\n' > /www/cgi-bin/fail
  chmod +x /www/cgi-bin/fail
fi
[ "$MODE" = unhealthy ] || echo "ok $VERSION" > /www/index.html
[ "$MODE" = broken ] || printf '[{"_id":1,"title":"Continuous Deployment","version":"%s"}]\n' "$VERSION" > /www/api/v1/books
exec httpd -f -p 8080 -h /www
