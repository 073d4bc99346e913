"""Application releases: the application file (a Compose file) and its release plan."""
