"""Sessions in a dictionary of the current process.

.. code-block:: python

    app.config["PRANCER_SESSION"] = {
        "store": {"driver": "memory", "options": {"max_sessions": 10000}},
    }

The default store, as in Prancer. Each process has its own sessions and loses
them when it exits, so it suits development and tests, not production: with
several workers a visitor's requests would land on different stores.

Options: ``max_sessions`` (default 10000; when full, the least recently used
session is evicted so the store cannot exhaust memory), plus the common
``expiration_timeout``, ``absolute_timeout``, ``autopurge`` and
``autopurge_probability``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..changes import ChangeSet
from ..changes import Record
from ..errors import ConfigurationError
from .base import DEFAULT_EXPIRATION_TIMEOUT
from .base import StoreDriver


class MemoryStore(StoreDriver):
    """Keep sessions in this process's memory, bounded and thread-safe.

    :param max_sessions: how many sessions to keep at most.
    """

    def __init__(
        self,
        *,
        max_sessions: int = 10000,
        expiration_timeout: float = DEFAULT_EXPIRATION_TIMEOUT,
        absolute_timeout: float | None = None,
        autopurge: bool = False,
        autopurge_probability: float = 0.1,
    ) -> None:
        super().__init__(
            expiration_timeout=expiration_timeout,
            absolute_timeout=absolute_timeout,
            autopurge=autopurge,
            autopurge_probability=autopurge_probability,
        )
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ConfigurationError("must be a positive whole number", "max_sessions")
        self.max_sessions = max_sessions
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def _live(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record.expires_at <= self.clock():
            del self._records[key]
            return None
        self._records.move_to_end(key)
        return record

    def fetch(self, key: str) -> Record | None:
        with self._lock:
            record = self._live(key)
        if record is None:
            return None
        # A copy, so the caller cannot change the stored session.
        return Record(dict(record.data), record.created_at, record.expires_at)

    def apply(self, key: str, changes: ChangeSet) -> None:
        with self._lock:
            record = self._live(key)
            if record is None:
                if changes.created_at is None:
                    return
                data: dict[str, str] = {}
                created_at = changes.created_at
            else:
                data = dict(record.data)
                created_at = record.created_at
            for removed in changes.removed:
                data.pop(removed, None)
            data.update(changes.updated)
            self._records[key] = Record(data, created_at, self.expiry_for(created_at))
            self._records.move_to_end(key)
            while len(self._records) > self.max_sessions:
                self._records.popitem(last=False)

    def touch(self, key: str, expires_at: float) -> None:
        with self._lock:
            record = self._live(key)
            if record is not None:
                self._records[key] = Record(record.data, record.created_at, expires_at)

    def remove(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)

    def purge(self) -> int:
        with self._lock:
            now = self.clock()
            expired = [key for key, rec in self._records.items() if rec.expires_at <= now]
            for key in expired:
                del self._records[key]
        return len(expired)
