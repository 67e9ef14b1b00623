"""Sessions in Redis (the ``redis`` extra): a single server, Sentinel or Cluster."""

from .client import DEFAULT_CONNECTION_OPTIONS as DEFAULT_CONNECTION_OPTIONS
from .store import RedisStore as RedisStore
from .users import SCAN_BATCH as SCAN_BATCH

__all__ = ["DEFAULT_CONNECTION_OPTIONS", "RedisStore", "SCAN_BATCH"]
