"""zai-proxy: a reverse proxy for the Z.AI (GLM) API."""

__version__ = "0.1.0"
