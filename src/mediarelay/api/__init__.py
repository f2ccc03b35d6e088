"""HTTP layer: the ASGI app, auth, error envelopes, the status fast path, files."""
