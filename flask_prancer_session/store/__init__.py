"""Store drivers: where session data lives."""
