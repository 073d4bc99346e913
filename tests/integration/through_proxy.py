"""A test command that passes against a color directly and, through the proxy, fails or hangs.

Usage: through_proxy.py fail|hang
"""

import os
import sys
import time

if os.environ["DOMAIN"] == os.environ["BLUEGREEN_PROXY_URL"]:
    if sys.argv[1] == "hang":
        time.sleep(60)
    sys.exit(1)
