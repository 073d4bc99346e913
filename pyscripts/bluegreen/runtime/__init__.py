"""Runtimes behind one interface (``base.Runtime``): ``docker`` and ``swarm``."""
