"""State drivers: how the session id travels between browser and server."""
