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

Options:

``dir`` (required)
    The directory of the session files, created with mode 0700 if missing. It
    must belong to the user the app runs as and must not be writable by group
    or others, as ssh's ``StrictModes`` requires of ``~/.ssh``: anyone who can
    write there can plant or steal sessions. A symbolic link is refused; give
    the real path. Its subdirectories are checked the same way when a session
    in them is written, and a session file of another user is refused, both
    with :class:`~flask_prancer_session.errors.SessionStoreError`.
``fsync`` (default ``False``)
    Flush each written file, and the directory after renaming it, to the disk
    before the request ends. Without it a power loss or kernel crash can lose
    the last seconds of session writes, as with Plack's and Django's file
    stores; a crash of the app itself never loses or tears a file either way.
    With it every write waits for the disk.

plus the common ``expiration_timeout``, ``permanent_timeout``,
``absolute_timeout``, ``autopurge`` and ``autopurge_probability``.

Files are written to a temporary file (mode 0600) and renamed over the old
one, so a reader or a killed process sees the old version or the new one, never
a torn file. Changes and removals are applied under an exclusive ``flock`` on a
lock file per subdirectory, so the processes and threads of one machine never
lose each other's writes and a removed session stays removed. It needs a POSIX
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
import stat
import tempfile
import time
import typing as t

from ..changes import ChangeSet
from ..changes import Record
from ..errors import ConfigurationError
from ..errors import SessionStoreError
from ..ids import is_store_key
from .base import DEFAULT_EXPIRATION_TIMEOUT
from .base import Seconds
from .base import StoreDriver

logger = logging.getLogger(__name__)

_LOCK_NAME = ".lock"
_TEMP_PREFIX = ".tmp-"
#: Temporary files older than this (seconds) are left over from a crash.
_STALE_TEMP_AGE = 3600
_HEX = frozenset("0123456789abcdef")


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def _unsafe(path: str, status: os.stat_result) -> str | None:
    """Tell what is wrong with ``path`` as a private directory, with the fix, or
    ``None`` if nothing is."""
    if stat.S_ISLNK(status.st_mode):
        return f"{path!r} is a symbolic link; use the real path"
    if not stat.S_ISDIR(status.st_mode):
        return f"{path!r} is not a directory"
    if status.st_uid != os.geteuid():
        return (
            f"{path!r} belongs to uid {status.st_uid}, not to the uid {os.geteuid()} the app"
            f" runs as; remove it, or 'chown -R {os.geteuid()} {path}' if it is yours"
        )
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{path!r} is writable by group or others; run 'chmod 700 {path}'"
            " and check that no one else planted a session in it"
        )
    return None


class StorableStore(StoreDriver):
    """Keep each session in a file under ``dir``.

    :param dir: the directory of the session files, private to the app's user.
    :param fsync: flush each write to the disk before returning.
    """

    def __init__(
        self,
        *,
        dir: str | os.PathLike[str] | None = None,
        fsync: bool = False,
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
        if dir is None:
            raise ConfigurationError("is required: the directory to keep session files in", "dir")
        if not isinstance(dir, (str, os.PathLike)):
            raise ConfigurationError("must be a directory path", "dir")
        if not isinstance(fsync, bool):
            raise ConfigurationError("must be true or false", "fsync")
        self.fsync = fsync
        self.dir = os.path.abspath(dir)
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            problem = _unsafe(self.dir, os.lstat(self.dir))
            if problem is None:
                # Proves the directory is writable, also for root, whom access() always allows.
                fd, probe = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=self.dir)
                os.close(fd)
                os.unlink(probe)
        except OSError as error:
            raise ConfigurationError(
                f"{self.dir!r} is not a writable directory: {error}", "dir"
            ) from error
        if problem is not None:
            raise ConfigurationError(f"is not safe for sessions: {problem}.", "dir")

    def _path(self, key: str) -> str:
        if not is_store_key(key):
            raise ValueError("not a store key")
        return os.path.join(self.dir, key[:2], key)

    @contextlib.contextmanager
    def _locked(self, shard: str) -> t.Iterator[None]:
        """Hold the lock of the subdirectory ``shard`` of :attr:`dir`, creating
        it if missing and refusing it unless it is private."""
        path = os.path.join(self.dir, shard)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
            problem = _unsafe(path, os.lstat(path))
            if problem is None:
                fd = os.open(
                    os.path.join(path, _LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
                )
        except OSError as error:
            raise SessionStoreError(
                f"Cannot lock the session directory {path!r}.", error
            ) from error
        if problem is not None:
            raise SessionStoreError(f"Refusing the session directory: {problem}.")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, path: str) -> Record | None:
        try:
            with open(path, "rb") as file:
                status = os.fstat(file.fileno())
                if status.st_uid != os.geteuid():
                    raise SessionStoreError(
                        f"Refusing the session file {path!r}: it belongs to uid"
                        f" {status.st_uid}, so someone else planted it."
                    )
                expires_at = status.st_mtime_ns / 1_000_000_000
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

    def apply(self, key: str, changes: ChangeSet) -> bool:
        path = self._path(key)
        with self._locked(key[:2]):
            record = self._read(path)
            if record is None:
                if changes.created_at is None:
                    return False
                data: dict[str, str] = {}
                created_at = changes.created_at
            else:
                data, created_at = record.data, record.created_at
            for removed in changes.removed:
                data.pop(removed, None)
            data.update(changes.updated)
            if not data:
                if record is not None:
                    self._unlink(path)
                return False
            content = json.dumps({"created_at": created_at, "data": data}).encode()
            self._write(path, content, self.expiry_for(created_at, timeout=changes.timeout))
            return True

    def _write(self, path: str, content: bytes, expires_at: float) -> None:
        temp = None
        try:
            fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=os.path.dirname(path))
            with open(fd, "wb") as file:
                file.write(content)
                file.flush()
                os.utime(fd, ns=(_ns(expires_at), _ns(expires_at)))
                if self.fsync:
                    os.fsync(fd)
            os.replace(temp, path)
            temp = None
            self._sync_dir(path)
        except OSError as error:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            raise SessionStoreError(f"Cannot write the session file {path!r}.", error) from error

    def _unlink(self, path: str) -> bool:
        """Delete the file at ``path`` and tell whether a live session was there."""
        try:
            live = os.stat(path).st_mtime_ns > _ns(self.clock())
            os.unlink(path)
            self._sync_dir(path)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise SessionStoreError(f"Cannot delete the session file {path!r}.", error) from error
        return live

    def _sync_dir(self, path: str) -> None:
        if self.fsync:
            fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def touch(self, key: str, expires_at: float) -> None:
        path = self._path(key)
        with self._locked(key[:2]):
            try:
                if os.stat(path).st_mtime_ns > _ns(self.clock()):
                    os.utime(path, ns=(_ns(expires_at), _ns(expires_at)))
            except FileNotFoundError:
                pass
            except OSError as error:
                raise SessionStoreError(
                    f"Cannot touch the session file {path!r}.", error
                ) from error

    def remove(self, key: str) -> bool:
        path = self._path(key)
        # Under the lock, so a write that has read the file cannot put it back.
        with self._locked(key[:2]):
            return self._unlink(path)

    def purge(self) -> int:
        try:
            with os.scandir(self.dir) as entries:
                shards = [
                    entry.name
                    for entry in entries
                    if len(entry.name) == 2
                    and _HEX.issuperset(entry.name)
                    and entry.is_dir(follow_symlinks=False)
                ]
        except OSError as error:
            raise SessionStoreError(
                f"Cannot purge the session directory {self.dir!r}.", error
            ) from error
        return sum(self._purge_shard(shard) for shard in shards)

    def _purge_shard(self, shard: str) -> int:
        """Purge one subdirectory, taking its lock only to delete.

        Files come and go meanwhile (renamed temporary files, sessions another
        purge or a logout deleted): a file that vanished is skipped.
        """
        now_ns = _ns(self.clock())
        stale_ns = _ns(time.time() - _STALE_TEMP_AGE)
        directory = os.path.join(self.dir, shard)
        expired = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        if entry.name.startswith(_TEMP_PREFIX):
                            if entry.stat(follow_symlinks=False).st_ctime_ns < stale_ns:
                                os.unlink(entry.path)
                        elif (
                            entry.name.startswith(shard)
                            and is_store_key(entry.name)
                            and entry.stat(follow_symlinks=False).st_mtime_ns <= now_ns
                        ):
                            expired.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            return 0
        except OSError as error:
            raise SessionStoreError(
                f"Cannot purge the session directory {directory!r}.", error
            ) from error
        if not expired:
            return 0
        removed = 0
        # Checked again under the lock: a request may have renewed one meanwhile.
        with self._locked(shard):
            for path in expired:
                try:
                    if os.stat(path).st_mtime_ns <= now_ns:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    pass
                except OSError as error:
                    raise SessionStoreError(
                        f"Cannot delete the session file {path!r}.", error
                    ) from error
        return removed
