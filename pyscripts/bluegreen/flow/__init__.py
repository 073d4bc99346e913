"""The flow: ``steps`` (the only caller of the backends), ``pipeline`` (the one orchestrator), ``checks``."""
