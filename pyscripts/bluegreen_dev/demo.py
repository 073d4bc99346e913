"""The main job: a full local blue -> green -> blue cycle of the sample service.

Starts a private sandbox (dockerd if needed, a Consul dev agent, nginx on a loopback port),
then runs the ``bluegreen`` commands a user would type, printing each one, and what the
proxy serves after it. Everything it started is removed at the end.

    python -m bluegreen_dev.demo [--keep]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bluegreen_dev.sample_app import build_sample_app_images
from bluegreen_dev.sandbox import Nginx, Sandbox

SERVICE = "books-ms"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-world" / "compose.yaml"
HTTP = ["--http", "/api/v1/books"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
    print(f"# starting a private sandbox in {root} (Docker, Consul dev agent, nginx)", flush=True)
    sb = Sandbox(root).start()
    env = sb.env()
    print(f"# Consul {sb.consul.addr}  nginx {sb.nginx.url}  (settings in BLUEGREEN_* env vars)")
    failures = 0

    def bg(*cmd: str, expect: int = 0) -> str:
        nonlocal failures
        print(f"\n$ bluegreen {shlex.join(cmd)}", flush=True)
        start = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "bluegreen", *cmd], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        print(p.stdout.rstrip())
        print(f"  [exit {p.returncode}, {time.monotonic() - start:.2f}s]")
        if p.returncode != expect:
            failures += 1
            print(f"  !! expected exit {expect}")
        return p.stdout

    def proxy() -> None:
        r = requests.get(f"{sb.nginx.url}/api/v1/books", timeout=5)
        print(f"$ curl {sb.nginx.url}/api/v1/books  ->  {r.status_code} {r.text.strip()[:70]}")

    try:
        print("\n## 1. The book's manual steps: deploy blue, integrate it")
        bg("color", "next", SERVICE)
        bg("deploy", SERVICE, "--color", "blue", "--image", "bluegreen-sample:v1")
        proxy()
        bg("switch", SERVICE, "--color", "blue")
        proxy()

        print("\n## 2. The automated pipeline: v2 goes to green, tested beside blue, then switched")
        bg("run", SERVICE, "--image", "bluegreen-sample:v2", *HTTP, "--expect-body", "v2")
        proxy()

        print("\n## 3. A broken release is caught by the pre-integration tests; blue keeps serving")
        bg("run", SERVICE, "--image", "bluegreen-sample:broken", *HTTP, expect=1)
        proxy()

        print("\n## 4. v3 goes back to blue: the full cycle blue -> green -> blue")
        bg("run", SERVICE, "--image", "bluegreen-sample:v3", *HTTP, "--expect-body", "v3")
        proxy()

        print("\n## 5. Rollback to green (its stopped containers are started first)")
        bg("rollback", SERVICE)
        proxy()
        bg("switch", SERVICE, "--color", "blue", "--dry-run")
        bg("status", SERVICE)
        bg("history", SERVICE)

        print("\n## 6. An application release (the seed's hello-world): serviceB calls serviceA")
        print("##    at servicea.local, served by nginx; only changed services are redeployed")
        app_nginx = Nginx(root / "nginx-app").start()
        env = sb.env(app_nginx)
        build_sample_app_images()

        def app(a: str, b: str) -> str:
            text = EXAMPLE.read_text().replace("servicea:v1", f"servicea:{a}")
            path = root / f"compose-{a}-{b}.yaml"
            path.write_text(text.replace("serviceb:v1", f"serviceb:{b}"))
            return str(path)

        def hello() -> None:
            r = requests.get(f"{app_nginx.url}/", timeout=10)
            print(f"$ curl {app_nginx.url}/  ->  {r.status_code} {r.text.strip()}")

        bg("app", "check", "--file", str(EXAMPLE))
        bg("app", "deploy", "--file", app("v1", "v1"))
        hello()
        print("\n## 6a. The frontend release: serviceB v2, serviceA shared, 50% then 100%")
        bg("app", "deploy", "--file", app("v1", "v2"), "--steps", "50,100")
        hello()
        print("\n## 6b. The backend release, stopped at 50% for people to verify, then confirmed")
        bg("app", "deploy", "--file", app("v2", "v2"), "--steps", "50,100", "--confirm")
        hello()
        bg("app", "status", "hello-world")
        bg("app", "promote", "hello-world")
        hello()
        bg("app", "history", "hello-world")
    finally:
        if args.keep:
            print(f"\n# left running; env: CONSUL_HTTP_ADDR={sb.consul.addr} nginx {sb.nginx.url}")
        else:
            for service in (SERVICE, "hello-world.servicea", "hello-world.serviceb"):
                sb.remove_containers(service)
            Nginx(root / "nginx-app").stop()
            sb.close()
            print("\n# sandbox removed")
    print("demo: " + ("OK" if not failures else f"{failures} step(s) did not do what was expected"))
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
