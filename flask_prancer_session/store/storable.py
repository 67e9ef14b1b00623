"""Sessions as files in a directory, Prancer's ``Prancer::Session::Store::Storable``.

.. code-block:: python

    app.config["PRANCER_SESSION"] = {
        "store": {"driver": "storable", "options": {"dir": "/var/lib/myapp/sessions"}},
    }

Each session is one JSON file named by its store key (a SHA-256 hex digest,
never the session id), in one of 256 subdirectories named by the key's first
two characters. Finding a session is one ``open``, however many there are.
The file's modification time is its expiry time, so :meth:`~StorableStore.touch`
is one ``utime`` and ``flask session purge`` never opens a live file.

Options: ``dir`` (required; created with mode 0700 if missing), plus the common
``expiration_timeout``, ``absolute_timeout``, ``autopurge`` and
``autopurge_probability``.

Files are written to a temporary file (mode 0600), flushed to disk and renamed
over the old one, so a crash never leaves a torn session. Changes are applied
under an exclusive ``flock`` on a lock file per subdirectory, so the processes
and threads of one machine never lose each other's writes. It needs a POSIX
system, and every process using ``dir`` must be on the same machine (``flock``
is not reliable over NFS): use the database or Redis store for several machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import tempfile
import time
import typing as t

from ..changes import ChangeSet
from ..changes import Record
from ..errors import ConfigurationError
from ..errors import SessionStoreError
from ..ids import is_store_key
from .base import DEFAULT_EXPIRATION_TIMEOUT
from .base import StoreDriver

logger = logging.getLogger(__name__)

_LOCK_NAME = ".lock"
_TEMP_PREFIX = ".tmp-"
#: Temporary files older than this (seconds) are left over from a crash.
_STALE_TEMP_AGE = 3600


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


class StorableStore(StoreDriver):
    """Keep each session in a file under ``dir``.

    :param dir: the directory of the session files.
    """

    def __init__(
        self,
        *,
        dir: str | os.PathLike[str] | None = None,
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
        if dir is None:
            raise ConfigurationError("is required: the directory to keep session files in", "dir")
        if not isinstance(dir, (str, os.PathLike)):
            raise ConfigurationError("must be a directory path", "dir")
        self.dir = os.path.abspath(dir)
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            # Proves the directory is writable, also for root, whom access() always allows.
            fd, probe = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=self.dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise ConfigurationError(
                f"{self.dir!r} is not a writable directory: {error}", "dir"
            ) from error

    def _path(self, key: str) -> str:
        if not is_store_key(key):
            raise ValueError("not a store key")
        return os.path.join(self.dir, key[:2], key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> t.Iterator[None]:
        shard = os.path.join(self.dir, key[:2])
        try:
            os.makedirs(shard, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(shard, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise SessionStoreError(
                f"Cannot lock the session directory {shard!r}.", error
            ) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, path: str) -> Record | None:
        try:
            with open(path, "rb") as file:
                expires_at = os.fstat(file.fileno()).st_mtime_ns / 1_000_000_000
                if expires_at <= self.clock():
                    return None
                content = json.loads(file.read())
        except FileNotFoundError:
            return None
        except (PermissionError, IsADirectoryError, ValueError, RecursionError):
            logger.warning("Ignoring the unreadable session file %s.", path, exc_info=True)
            return None
        except OSError as error:
            raise SessionStoreError(f"Cannot read the session file {path!r}.", error) from error
        data = content.get("data") if isinstance(content, dict) else None
        created_at = content.get("created_at") if isinstance(content, dict) else None
        if (
            not isinstance(data, dict)
            or isinstance(created_at, bool)
            or not isinstance(created_at, (int, float))
            or not math.isfinite(created_at)
            or not all(isinstance(value, str) for value in data.values())
        ):
            logger.warning("Ignoring the malformed session file %s.", path)
            return None
        return Record(data, float(created_at), expires_at)

    def fetch(self, key: str) -> Record | None:
        return self._read(self._path(key))

    def apply(self, key: str, changes: ChangeSet) -> None:
        path = self._path(key)
        with self._locked(key):
            record = self._read(path)
            if record is None:
                if changes.created_at is None:
                    return
                data: dict[str, str] = {}
                created_at = changes.created_at
            else:
                data, created_at = record.data, record.created_at
            for removed in changes.removed:
                data.pop(removed, None)
            data.update(changes.updated)
            content = json.dumps({"created_at": created_at, "data": data}).encode()
            self._write(path, content, self.expiry_for(created_at))

    def _write(self, path: str, content: bytes, expires_at: float) -> None:
        temp = None
        try:
            fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=os.path.dirname(path))
            with open(fd, "wb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.utime(temp, ns=(_ns(expires_at), _ns(expires_at)))
            os.replace(temp, path)
        except OSError as error:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            raise SessionStoreError(f"Cannot write the session file {path!r}.", error) from error

    def touch(self, key: str, expires_at: float) -> None:
        path = self._path(key)
        with self._locked(key):
            try:
                if os.stat(path).st_mtime_ns > _ns(self.clock()):
                    os.utime(path, ns=(_ns(expires_at), _ns(expires_at)))
            except FileNotFoundError:
                pass
            except OSError as error:
                raise SessionStoreError(
                    f"Cannot touch the session file {path!r}.", error
                ) from error

    def remove(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise SessionStoreError(f"Cannot delete the session file {path!r}.", error) from error

    def purge(self) -> int:
        removed = 0
        try:
            shards = [entry.name for entry in os.scandir(self.dir) if entry.is_dir()]
            for shard in shards:
                removed += self._purge_shard(shard)
        except OSError as error:
            raise SessionStoreError(
                f"Cannot purge the session directory {self.dir!r}.", error
            ) from error
        return removed

    def _purge_shard(self, shard: str) -> int:
        now_ns = _ns(self.clock())
        stale_ns = _ns(time.time() - _STALE_TEMP_AGE)
        expired = []
        for entry in os.scandir(os.path.join(self.dir, shard)):
            if entry.name.startswith(_TEMP_PREFIX):
                if entry.stat().st_ctime_ns < stale_ns:
                    os.unlink(entry.path)
            elif is_store_key(entry.name) and entry.stat().st_mtime_ns <= now_ns:
                expired.append(entry.name)
        if not expired:
            return 0
        removed = 0
        # Checked again under the lock: a request may have renewed one meanwhile.
        with self._locked(expired[0]):
            for key in expired:
                path = self._path(key)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime_ns <= now_ns:
                        os.unlink(path)
                        removed += 1
        return removed
