"""``bluegreen``: argv -> options -> the command -> an exit status.

Errors are one line on stderr (``--debug`` adds the traceback), their exit status is the
exception's (``errors.ExitStatus``); secrets are taken out of everything printed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from bluegreen.errors import BlueGreenError, ExitStatus, UsageError, add_secret, redact


def argv_from_env(args: list[str]) -> list[str]:
    """``--argv-json-env NAME``: the arguments are a JSON list in $NAME (the Jenkins steps pass
    user values this way, so no value is ever part of a shell command line)."""
    if args[:1] != ["--argv-json-env"]:
        return args
    if len(args) != 2:
        raise UsageError("--argv-json-env takes one variable name and nothing else")
    import os

    try:
        value = json.loads(os.environ[args[1]])
    except KeyError:
        raise UsageError(f"--argv-json-env: ${args[1]} is not set") from None
    except ValueError:
        raise UsageError(f"--argv-json-env: ${args[1]} is not JSON") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"--argv-json-env: ${args[1]} must be a JSON list of strings")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    from bluegreen import interrupts

    interrupts.install()  # SIGTERM/SIGINT: stop at a safe point, undo, exit 143/130
    try:
        args = argv_from_env(args)
        debug = "--debug" in args
        from bluegreen.cli import options

        opts = options.resolve(options.parse(args))
        add_secret(opts.get("consul_token"))
        debug = bool(opts.get("debug"))
        from bluegreen.cli import commands

        return int(commands.dispatch(opts))
    except BlueGreenError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"bluegreen: error: {redact(str(exc))}", file=sys.stderr)
        return int(exc.status)
    except KeyboardInterrupt:
        print("bluegreen: interrupted", file=sys.stderr)
        return int(ExitStatus.SIGINT)
