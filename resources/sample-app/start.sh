#!/bin/sh
# GET / runs cgi-bin/index.cgi (busybox httpd does for a directory without index.html);
# GET /health answers "ok SERVICE VERSION". Every answer of / names the version in X-Version.
set -e
mkdir -p /www/cgi-bin /tmp
printf 'ok %s %s\n' "$SERVICE" "$VERSION" > /www/health
cp /app/index.cgi /www/cgi-bin/index.cgi
chmod 755 /www/cgi-bin/index.cgi
exec httpd -f -p "$PORT" -h /www
