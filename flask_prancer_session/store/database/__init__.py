"""Sessions in a SQL table through SQLAlchemy Core (the ``database``,
``postgres``, ``mysql`` and ``mysqlclient`` extras): PostgreSQL, MySQL,
MariaDB or SQLite, one row per session. The manual's database pages say how
to configure it, what it guarantees and which statements it sends."""

from .execution import DriverError as DriverError
from .statements import PURGE_BATCH as PURGE_BATCH
from .statements import SCAN_BATCH as SCAN_BATCH
from .store import DatabaseStore as DatabaseStore

__all__ = ["DatabaseStore", "DriverError", "PURGE_BATCH", "SCAN_BATCH"]
