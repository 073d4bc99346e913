"""bluegreen: zero-downtime blue-green deployments with Docker, Consul and nginx."""

__version__ = "0.1.0"
