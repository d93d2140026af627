"""The proxy's own clients: authentication and per-client limits."""
