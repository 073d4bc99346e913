"""The command line: ``main`` (argv -> exit status), ``options`` (each option declared once),
``commands`` (one function per command), ``output``."""

from bluegreen.cli.main import main

__all__ = ["main"]
