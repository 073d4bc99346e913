"""Proxies behind one interface (``base.Proxy``): nginx reloaded (``nginx``)."""
