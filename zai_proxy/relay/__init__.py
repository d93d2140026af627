"""The request path: the handler, upstream attempts, retries, the upstream pool."""
