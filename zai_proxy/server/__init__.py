"""The proxy program: settings, the app factory, uvicorn's protocol, connections."""
