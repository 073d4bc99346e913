"""Service registries behind one interface (``base.Registry``): ``consul`` and ``file``."""
