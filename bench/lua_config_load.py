"""What loading Debian's Lua module costs nginx's configuration load, per ``location``: ``nginx
-t`` of N plain proxy locations (each to its own plain upstream), with and without the two
``load_module`` lines of ``libnginx-mod-http-lua`` (and nothing else of Lua), medians of
``--repeat``. A checked reload pays the load twice (``nginx -t``, then the master's reload).

    .venv/bin/python bench/lua_config_load.py [--sizes 10,100,1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so",
           "/usr/lib/nginx/modules/ngx_http_lua_module.so")


def conf(root: Path, size: int, lua: bool) -> Path:
    upstreams = "\n".join(f"upstream u{i} {{ server 127.0.0.1:{1024 + i}; }}" for i in range(size))
    locations = "\n".join(f"location /svc-{i:04d} {{ proxy_pass http://u{i}; }}" for i in range(size))
    modules = "".join(f"load_module {m};\n" for m in MODULES) if lua else ""
    path = root / f"{size}-{'lua' if lua else 'plain'}.conf"
    path.write_text(f"{modules}pid {root}/nginx.pid;\nerror_log {root}/error.log;\nevents {{}}\n"
                    f"http {{\naccess_log off;\n{upstreams}\nserver {{\nlisten 127.0.0.1:1;\n"
                    f"{locations}\n}}\n}}\n")
    return path


def test_ms(root: Path, path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["nginx", "-t", "-q", "-p", str(root), "-c", str(path)], check=True)
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bg-lua-load-") as tmp:
        root = Path(tmp)
        for size in (int(n) for n in args.sizes.split(",")):
            paths = {lua: conf(root, size, lua) for lua in (False, True)}
            took: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeat):  # alternated
                for lua, path in paths.items():
                    took[lua].append(test_ms(root, path))
            plain, lua = (statistics.median(took[k]) for k in (False, True))
            print(f"{size:>5} locations: nginx -t {plain:6.1f} ms without the Lua module, "
                  f"{lua:6.1f} ms with it ({(lua - plain) / size * 1000:.0f} us a location more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
