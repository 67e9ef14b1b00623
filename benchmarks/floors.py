"""Floors: the least a server-side session can do on each backend.

A floor keeps a random id in a cookie that is not signed and the whole
session as one JSON blob under that id: read with one query when the request
first uses the session, written back whole with one more when the request
changed it. There is no signing, no merge of concurrent changes, no expiry,
no index by user and no encryption. What a store costs above the floor on
the same backend, through the same driver, is the store's own overhead.

Every floor is correct for what it does: the id has 256 random bits, an id
the backend does not know is never adopted (the next write stores the
session under a new one), and an id is only ever a query parameter or, for
files, a name checked to stay in the directory. What floors give up is what
they are meant to measure the price of: two requests of one visitor at once
lose one of their writes (the last write wins), and sessions are never
deleted.

Each floor serves one thread at a time: it holds one connection (or file
name per process and thread), as the single-threaded benchmark and gunicorn's
sync workers use it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import threading
import typing as t

from flask.sessions import SessionInterface
from flask.sessions import SessionMixin

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response

#: The cookie that carries a floor session's id.
COOKIE_NAME = "floor_session"


class FloorBackend(t.Protocol):
    """Where a floor keeps its blobs."""

    def load(self, session_id: str) -> str | bytes | None:
        """Return the blob stored under ``session_id``, or ``None``."""

    def save(self, session_id: str, blob: str, *, new: bool) -> None:
        """Store ``blob`` under ``session_id``; ``new`` when nothing is stored there yet."""

    def close(self) -> None:
        """Close the connection."""


class FloorSession(dict[str, t.Any], SessionMixin):
    """A dict that reads its blob the first time the request uses it."""

    def __init__(self, session_id: str | None, load: t.Callable[[str], str | bytes | None]) -> None:
        super().__init__()
        #: The stored id; ``None`` until one is given to a new session.
        self.sid = session_id
        self._pending = session_id is not None
        self._loader = load
        self.modified = False
        self.accessed = False

    def _load(self) -> None:
        self.accessed = True
        if self._pending:
            self._pending = False
            assert self.sid is not None
            blob = self._loader(self.sid)
            if blob is None:
                self.sid = None  # unknown ids are never adopted
            else:
                dict.update(self, json.loads(blob))

    def __getitem__(self, key: str) -> t.Any:
        self._load()
        return dict.__getitem__(self, key)

    def get(self, key: str, default: t.Any = None) -> t.Any:
        self._load()
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        self._load()
        return dict.__contains__(self, key)

    def __iter__(self) -> t.Iterator[str]:
        self._load()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._load()
        return dict.__len__(self)

    def keys(self) -> t.KeysView[str]:  # type: ignore[override]
        self._load()
        return dict.keys(self)

    def values(self) -> t.ValuesView[t.Any]:  # type: ignore[override]
        self._load()
        return dict.values(self)

    def items(self) -> t.ItemsView[str, t.Any]:  # type: ignore[override]
        self._load()
        return dict.items(self)

    def __setitem__(self, key: str, value: t.Any) -> None:
        self._load()
        self.modified = True
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._load()
        self.modified = True
        dict.__delitem__(self, key)

    def setdefault(self, key: str, default: t.Any = None) -> t.Any:
        self._load()
        self.modified = True
        return dict.setdefault(self, key, default)

    def pop(self, key: str, *default: t.Any) -> t.Any:
        self._load()
        self.modified = True
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, t.Any]:
        self._load()
        self.modified = True
        return dict.popitem(self)

    def update(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._load()
        self.modified = True
        dict.update(self, *args, **kwargs)

    def clear(self) -> None:
        self._load()
        self.modified = True
        dict.clear(self)


class FloorInterface(SessionInterface):
    """Flask's session, kept by ``backend`` as one JSON blob under an unsigned id."""

    def __init__(self, backend: FloorBackend) -> None:
        self.backend = backend

    def open_session(self, app: Flask, request: Request) -> FloorSession:
        return FloorSession(request.cookies.get(COOKIE_NAME), self.backend.load)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, FloorSession) or not session.modified:
            return
        blob = json.dumps(session)
        if session.sid is None:
            session.sid = secrets.token_urlsafe(32)
            self.backend.save(session.sid, blob, new=True)
            response.set_cookie(COOKIE_NAME, session.sid, httponly=True, samesite="Lax")
        else:
            self.backend.save(session.sid, blob, new=False)


def install(app: Flask, backend: FloorBackend) -> None:
    """Keep ``app``'s sessions on ``backend``, the floor way."""
    app.session_interface = FloorInterface(backend)


class MemoryFloor:
    """Blobs in a dict of this process."""

    def __init__(self) -> None:
        self.blobs: dict[str, str] = {}

    def load(self, session_id: str) -> str | None:
        return self.blobs.get(session_id)

    def save(self, session_id: str, blob: str, *, new: bool) -> None:
        self.blobs[session_id] = blob

    def close(self) -> None:
        self.blobs.clear()


_ID = re.compile(r"[A-Za-z0-9_-]{43}")


class FileFloor:
    """A file per session: read whole; written to a temporary file that is
    renamed over it, so a reader never sees a torn blob. The id becomes the
    file name only if it has the shape of one this floor makes."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory

    def load(self, session_id: str) -> bytes | None:
        if _ID.fullmatch(session_id) is None:
            return None
        try:
            with open(os.path.join(self.directory, session_id), "rb") as file:
                return file.read()
        except FileNotFoundError:
            return None

    def save(self, session_id: str, blob: str, *, new: bool) -> None:
        path = os.path.join(self.directory, session_id)
        temp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, blob.encode())
        finally:
            os.close(fd)
        os.replace(temp, path)

    def close(self) -> None:
        pass


class RedisFloor:
    """``GET`` and ``SET`` of one key per session, with redis-py."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def load(self, session_id: str) -> str | bytes | None:
        blob: str | bytes | None = self.client.get(self.prefix + session_id)
        return blob

    def save(self, session_id: str, blob: str, *, new: bool) -> None:
        self.client.set(self.prefix + session_id, blob)

    def close(self) -> None:
        self.client.close()


#: The floor table's columns, per backend: the id, then the blob.
_TABLE = {
    "postgresql": "id VARCHAR(64) PRIMARY KEY, data TEXT NOT NULL",
    "mysql": "id VARCHAR(64) PRIMARY KEY, data MEDIUMTEXT NOT NULL",
    "sqlite": "id TEXT PRIMARY KEY, data TEXT NOT NULL",
}


def create_table_sql(backend: str, table: str) -> str:
    """Return the statement that creates a floor's table on ``backend``."""
    return f"CREATE TABLE {table} ({_TABLE[backend]})"


class _SQLFloor:
    """A primary-key ``SELECT``, then an ``UPDATE`` or an ``INSERT``, on one
    connection in autocommit mode."""

    #: The DBAPI's placeholder.
    mark = "%s"

    def __init__(self, connection: t.Any, table: str) -> None:
        self.connection = connection
        self.cursor = connection.cursor()
        mark = self.mark
        self.select = f"SELECT data FROM {table} WHERE id = {mark}"
        self.update = f"UPDATE {table} SET data = {mark} WHERE id = {mark}"
        self.insert = f"INSERT INTO {table} (data, id) VALUES ({mark}, {mark})"

    def load(self, session_id: str) -> str | None:
        cursor = self.cursor
        cursor.execute(self.select, (session_id,))
        row = cursor.fetchone()
        return None if row is None else str(row[0])

    def save(self, session_id: str, blob: str, *, new: bool) -> None:
        self.cursor.execute(self.insert if new else self.update, (blob, session_id))

    def close(self) -> None:
        self.cursor.close()
        self.connection.close()


class PostgresFloor(_SQLFloor):
    """With psycopg, which prepares statements it runs often on the server.

    Writes wait for no flush to disk (``synchronous_commit = off``), as with
    the database store's default: the floor is as durable as the store.
    """

    def __init__(self, conninfo: str, table: str) -> None:
        import psycopg

        connection = psycopg.connect(conninfo, autocommit=True)
        connection.execute("SET synchronous_commit = off")
        super().__init__(connection, table)


class MariaDBFloor(_SQLFloor):
    """With PyMySQL. Writes are flushed as the server's
    ``innodb_flush_log_at_trx_commit`` says, as with the database store."""

    def __init__(self, connect_args: dict[str, t.Any], table: str) -> None:
        import pymysql  # type: ignore[import-untyped]

        super().__init__(pymysql.connect(**connect_args, autocommit=True), table)


class SQLiteFloor(_SQLFloor):
    """With the standard library's sqlite3, in WAL mode with ``synchronous =
    NORMAL`` as the database store sets up SQLite."""

    mark = "?"

    def __init__(self, path: str, table: str) -> None:
        connection = sqlite3.connect(path, isolation_level=None, timeout=15)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        super().__init__(connection, table)
