#!/usr/bin/env bash
# Build the Consul agent from the Go module proxy and cache it outside the repo.
#
#   scripts/build-consul.sh            -> prints the path of the cached binary
#
# `go install github.com/hashicorp/consul@vX` is refused because consul's go.mod
# replaces its nested modules (./api, ./sdk, ...) with directories that the root
# module's zip does not contain. We download the root module, put each nested
# module beside it at the version the root go.mod requires, and build.
# Idempotent: a cached binary of the right version is reused.
set -euo pipefail

CONSUL_VERSION="${BLUEGREEN_CONSUL_VERSION:-v1.22.7}"
CACHE_DIR="${BLUEGREEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bluegreen}"
BIN="$CACHE_DIR/consul-$CONSUL_VERSION"

if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

# One build at a time: a second caller waits for the first one's binary.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.build-consul.lock"
flock 9
if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin:/usr/lib/go/bin"
command -v go >/dev/null || { echo "build-consul: go is not installed (apt-get install golang-go)" >&2; exit 3; }
mkdir -p "$CACHE_DIR"
work="$(mktemp -d "$CACHE_DIR/build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

start=$(date +%s)
root_dir=$(go mod download -json "github.com/hashicorp/consul@$CONSUL_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
cp -r "$root_dir" "$work/consul"
chmod -R u+w "$work/consul"

# Each replaced nested module. The proxy does not tell the root's commit, and the
# versions its go.mod requires are older than the root's code, so we take, for each
# nested module, the newest release published no later than the root release
# (falling back to the required version). Override: BLUEGREEN_CONSUL_NESTED="api=v1.34.1 ..."
root_time=$(go mod download -json "github.com/hashicorp/consul@$CONSUL_VERSION" |
  python3 -c 'import json,sys; print(json.load(open(json.load(sys.stdin)["Info"]))["Time"])')
python3 - "$work/consul/go.mod" "$root_time" >"$work/nested.txt" <<'PY2'
import json, os, re, sys, urllib.request
text = open(sys.argv[1]).read()
root_time = sys.argv[2]
proxy = os.environ.get("GOPROXY") or os.popen("go env GOPROXY").read().strip()
proxy = proxy.split(",")[0].split("|")[0].rstrip("/")
forced = dict(kv.split("=", 1) for kv in os.environ.get("BLUEGREEN_CONSUL_NESTED", "").split() if "=" in kv)

def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()

for mod, sub in re.findall(r"(github\.com/hashicorp/consul/[\w-]+)\s*=>\s*\./([\w-]+)", text):
    m = re.search(r"^\s*" + re.escape(mod) + r"\s+(v\S+)", text, re.M)
    if not m:
        sys.exit(f"no required version for {mod}")
    best = m.group(1)
    if sub in forced:
        best = forced[sub]
    elif proxy.startswith("http"):
        try:
            best_time = json.loads(get(f"{proxy}/{mod}/@v/{best}.info"))["Time"]
            for v in get(f"{proxy}/{mod}/@v/list").split():
                if "-" in v:
                    continue
                t = json.loads(get(f"{proxy}/{mod}/@v/{v}.info"))["Time"]
                if best_time < t <= root_time:
                    best, best_time = v, t
        except OSError as exc:
            print(f"build-consul: cannot list {mod} ({exc}); using {best}", file=sys.stderr)
    print(mod, best, sub)
PY2
while read -r mod ver sub; do
  d=$(go mod download -json "$mod@$ver" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "${work:?}/consul/$sub"
  cp -r "$d" "$work/consul/$sub"
  chmod -R u+w "$work/consul/$sub"
  echo "build-consul: $mod@$ver -> ./$sub" >&2
done <"$work/nested.txt"

(cd "$work/consul" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$work/consul-bin" .) >&2
"$work/consul-bin" version >&2
mv "$work/consul-bin" "$BIN"
echo "build-consul: built $CONSUL_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
