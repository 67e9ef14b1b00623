"""Sessions in a dictionary of the current process.

.. code-block:: python

    app.config["PRANCER_SESSION"] = {
        "store": {"driver": "memory", "options": {"max_sessions": 10000}},
    }

The default store, as in Prancer. Each process has its own sessions and loses
them when it exits, so it suits development and tests, not production: with
several workers a visitor's requests would land on different stores.

Options: ``max_sessions`` (default 10000) and ``max_bytes`` (default 64 MiB,
counting the keys and serialised values): past either bound the least recently
used sessions are evicted, so the store cannot exhaust memory; plus the common
``expiration_timeout``, ``permanent_timeout``, ``absolute_timeout``,
``autopurge`` and ``autopurge_probability``.
"""

from __future__ import annotations

import threading
import typing as t
from collections import OrderedDict

from ..changes import ChangeSet
from ..changes import Record
from ..changes import user_id_of
from ..changes import USER_KEY
from ..errors import ConfigurationError
from .base import DEFAULT_EXPIRATION_TIMEOUT
from .base import Seconds
from .base import StoreDriver


def _size(record: Record) -> int:
    return sum(len(key) + len(value) for key, value in record.data.items())


class MemoryStore(StoreDriver):
    """Keep sessions in this process's memory, bounded and thread-safe.

    :param max_sessions: how many sessions to keep at most.
    :param max_bytes: how many characters of keys and values to keep at most.
    """

    def __init__(
        self,
        *,
        max_sessions: int = 10000,
        max_bytes: int = 64 * 1024 * 1024,
        expiration_timeout: Seconds = DEFAULT_EXPIRATION_TIMEOUT,
        permanent_timeout: Seconds | None = None,
        absolute_timeout: Seconds | None = None,
        autopurge: bool = False,
        autopurge_probability: float = 0.1,
    ) -> None:
        super().__init__(
            expiration_timeout=expiration_timeout,
            permanent_timeout=permanent_timeout,
            absolute_timeout=absolute_timeout,
            autopurge=autopurge,
            autopurge_probability=autopurge_probability,
        )
        for name, bound in (("max_sessions", max_sessions), ("max_bytes", max_bytes)):
            if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
                raise ConfigurationError("must be a positive whole number", name)
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._users: dict[str, set[str]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def _after_fork(self) -> None:
        super()._after_fork()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def size(self) -> int:
        """How many characters of keys and values the store holds."""
        return self._bytes

    def _live(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record.expires_at <= self.clock():
            self._pop(key)
            return None
        self._records.move_to_end(key)
        return record

    def _pop(self, key: str) -> Record | None:
        record = self._records.pop(key, None)
        if record is not None:
            self._bytes -= _size(record)
            self._index(key, record, add=False)
        return record

    def _put(self, key: str, record: Record) -> None:
        self._pop(key)
        self._records[key] = record
        self._bytes += _size(record)
        self._index(key, record, add=True)
        while len(self._records) > self.max_sessions or (
            self._bytes > self.max_bytes and len(self._records) > 1
        ):
            self._pop(next(iter(self._records)))

    def _index(self, key: str, record: Record, *, add: bool) -> None:
        value = record.data.get(USER_KEY)
        user_id = None if value is None else user_id_of(value)
        if user_id is None:
            return
        keys = self._users.setdefault(user_id, set())
        if add:
            keys.add(key)
        else:
            keys.discard(key)
            if not keys:
                del self._users[user_id]

    def fetch(self, key: str) -> Record | None:
        with self._lock:
            record = self._live(key)
        if record is None:
            return None
        # A copy, so the caller cannot change the stored session.
        return Record(dict(record.data), record.created_at, record.expires_at)

    def apply(self, key: str, changes: ChangeSet) -> bool:
        with self._lock:
            record = self._live(key)
            if record is None:
                if changes.created_at is None:
                    return False
                data = changes.merged_into({})
                created_at = changes.created_at
            else:
                data = changes.merged_into(record.data)
                created_at = record.created_at
            if not data:
                self._pop(key)
                return False
            expires_at = self.expiry_for(created_at, timeout=changes.timeout)
            self._put(key, Record(data, created_at, expires_at))
            return True

    def touch(self, key: str, expires_at: float) -> None:
        with self._lock:
            record = self._live(key)
            if record is not None:
                self._records[key] = Record(record.data, record.created_at, expires_at)

    def remove(self, key: str) -> bool:
        with self._lock:
            return self._live(key) is not None and self._pop(key) is not None

    indexes_users = True

    def scan(self) -> t.Iterator[tuple[str, Record]]:
        with self._lock:
            keys = list(self._records)
        for key in keys:
            record = self.fetch(key)
            if record is not None:
                yield key, record

    def sessions_of(self, user_id: str) -> dict[str, Record]:
        with self._lock:
            keys = list(self._users.get(user_id, ()))
            live = {key: self._live(key) for key in keys}
        return {key: record for key, record in live.items() if record is not None}

    def remove_user(self, user_id: str) -> int:
        with self._lock:
            keys = list(self._users.get(user_id, ()))
            return sum(self._live(key) is not None and self._pop(key) is not None for key in keys)

    def purge(self) -> int:
        with self._lock:
            now = self.clock()
            expired = [key for key, rec in self._records.items() if rec.expires_at <= now]
            for key in expired:
                self._pop(key)
        return len(expired)
