"""A test command that passes against a color directly and, through the proxy, fails or hangs.

Usage: through_proxy.py fail|hang [PIDFILE]
With PIDFILE, ``hang`` starts a child process and writes both pids there first (a test of
bluegreen ending the whole process group).
"""

import os
import subprocess
import sys
import time

if os.environ["DOMAIN"] == os.environ["BLUEGREEN_PROXY_URL"]:
    if sys.argv[1] == "hang":
        if len(sys.argv) > 2:
            child = subprocess.Popen(["sleep", "300"])
            tmp = sys.argv[2] + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(f"{os.getpid()} {child.pid}\n")
            os.replace(tmp, sys.argv[2])
        time.sleep(300)
    sys.exit(1)
