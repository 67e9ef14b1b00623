"""The storable store: a file per session under a private directory, changed
under a ``flock`` per subdirectory, Prancer's ``Prancer::Session::Store::Storable``.
The manual's storable page says what it guarantees."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
import typing as t

from ...changes import ChangeSet
from ...changes import Record
from ...changes import USER_KEY
from ...errors import ConfigurationError
from ...errors import SessionStoreError
from ...ids import is_store_key
from ..base import DEFAULT_EXPIRATION_TIMEOUT
from ..base import Seconds
from ..base import StoreDriver
from ..common import is_seconds
from ..common import unsafe_directory
from .fileformat import COMPACT_AT
from .fileformat import encode_line
from .fileformat import LOCK_NAME
from .fileformat import newest_line
from .fileformat import ns
from .fileformat import temp_path
from .fileformat import TEMP_PREFIX
from .fileformat import user_of
from .users import UserIndex

logger = logging.getLogger(__package__ or __name__)

#: Temporary files older than this (seconds) are left over from a crash.
_STALE_TEMP_AGE = 3600
_HEX = frozenset("0123456789abcdef")


class StorableStore(UserIndex, StoreDriver):
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
            problem = unsafe_directory(self.dir, os.lstat(self.dir))
            if problem is None:
                # Proves the directory is writable, also for root, whom access() always allows.
                fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.dir)
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

    def _private_dir(self, path: str, *, create: bool = True) -> bool:
        """Check that the subdirectory ``path`` is private, creating it if
        ``create``, and tell whether it exists.

        :raise SessionStoreError: if it is not private.
        :raise OSError: if it cannot be created or looked at.
        """
        if create:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            else:
                self._sync_dir(path)
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            if create:
                raise
            return False
        problem = unsafe_directory(path, status)
        if problem is not None:
            raise SessionStoreError(f"Refusing the session directory: {problem}.")
        return True

    @contextlib.contextmanager
    def _locked(self, shard: str) -> t.Iterator[None]:
        """Hold the lock of the subdirectory ``shard`` of :attr:`dir`, creating
        it if missing and refusing it unless it is private."""
        path = os.path.join(self.dir, shard)
        try:
            if not self._private_dir(path, create=False):
                self._private_dir(path)
            fd = os.open(
                os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
            )
        except OSError as error:
            raise SessionStoreError(
                f"Cannot lock the session directory {path!r}.", error
            ) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open(self, path: str, flags: int) -> int | None:
        """Open the session file at ``path``, or return ``None`` if there is none."""
        try:
            # Neither a planted symbolic link (to another session's file) nor a
            # FIFO (which would block the request) is followed or waited on.
            return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            logger.warning("Ignoring %s: it is not a regular file.", path)
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise SessionStoreError(
                    f"Refusing the session file {path!r}: it is a symbolic link."
                ) from None
            raise SessionStoreError(f"Cannot read the session file {path!r}.", error) from error

    def _load(self, fd: int, path: str) -> tuple[Record | None, int | None]:
        """Return the session in the open file ``fd``, expired or not, or
        ``None`` if it holds none; and the file's size if a version may be
        appended to it, ``None`` if it must be rewritten."""
        try:
            status = os.fstat(fd)
            if status.st_uid != os.geteuid():
                raise SessionStoreError(
                    f"Refusing the session file {path!r}: it belongs to uid"
                    f" {status.st_uid}, so someone else planted it."
                )
            if not stat.S_ISREG(status.st_mode):
                logger.warning("Ignoring %s: it is not a regular file.", path)
                return None, None
            content = os.pread(fd, status.st_size, 0)
        except OSError as error:
            raise SessionStoreError(f"Cannot read the session file {path!r}.", error) from error
        payload, clean = newest_line(content)
        try:
            # Decoded first: json.loads would guess the encoding of bytes.
            version = None if payload is None else json.loads(payload.decode())
        except (ValueError, RecursionError):
            version = None
        data = version.get("data") if isinstance(version, dict) else None
        created_at = version.get("created_at") if isinstance(version, dict) else None
        expires_at = version.get("expires_at") if isinstance(version, dict) else None
        if (
            not isinstance(data, dict)
            or not is_seconds(created_at)
            or not is_seconds(expires_at)
            or not all(isinstance(value, str) for value in data.values())
        ):
            logger.warning("Ignoring the unreadable session file %s.", path)
            return None, None
        # The file's time is set to the expiry once the line is written, and
        # may move later with a touch.
        expires_at = max(float(expires_at), status.st_mtime_ns / 1_000_000_000)
        record = Record(data, float(created_at), expires_at)
        return record, (len(content) if clean else None)

    def _read(self, path: str, *, expired: bool = False) -> Record | None:
        """Return the session in the file at ``path``, or ``None`` if there is
        none, it cannot be read, or it has expired (unless ``expired``)."""
        fd = self._open(path, os.O_RDONLY)
        if fd is None:
            return None
        try:
            record, _ = self._load(fd, path)
        finally:
            os.close(fd)
        if record is None or (not expired and record.expires_at <= self.clock()):
            return None
        return record

    def fetch(self, key: str) -> Record | None:
        path = self._path(key)
        try:
            # Anyone who can write to a subdirectory can rename one
            # session's file to another's name.
            if not self._private_dir(os.path.dirname(path), create=False):
                return None
        except OSError as error:
            raise SessionStoreError(f"Cannot read the session file {path!r}.", error) from error
        return self._read(path)

    def apply(self, key: str, changes: ChangeSet) -> bool:
        path = self._path(key)
        with self._locked(key[:2]):
            fd = self._open(path, os.O_RDWR)
            try:
                return self._apply(key, path, fd, changes)
            finally:
                if fd is not None:
                    os.close(fd)

    def _apply(self, key: str, path: str, fd: int | None, changes: ChangeSet) -> bool:
        """Apply ``changes`` to the session file at ``path``, open as ``fd`` if
        it exists. Under the lock."""
        # Expired too: its user's marker goes once the file is rewritten.
        stored, size = (None, None) if fd is None else self._load(fd, path)
        record = None if stored is None or stored.expires_at <= self.clock() else stored
        old_user = user_of(stored)
        if record is None:
            if changes.created_at is None:
                if changes.erase_old_values and stored is not None:
                    # Expired meanwhile: the file purge would delete goes now,
                    # with the values it holds.
                    self._delete(key, stored)
                elif changes.erase_old_values:
                    self._unlink(temp_path(path))
                return False
            data = changes.merged_into({})
            created_at = changes.created_at
        else:
            data, created_at = changes.merged_into(record.data), record.created_at
        if not data:
            if record is not None:
                self._delete(key, stored)
            return False
        new_user = user_of(Record(data, created_at, 0))
        if new_user is not None and new_user != old_user:
            self._mark(key, new_user)
        expires_at = self.expiry_for(created_at, timeout=changes.timeout)
        line = encode_line(created_at, expires_at, data)
        if (
            fd is not None
            and size is not None
            and record is not None
            and not changes.removed
            and data.get(USER_KEY) == record.data.get(USER_KEY)
            and not changes.erase_old_values
            and size + len(line) <= max(COMPACT_AT, 4 * len(line))
        ):
            self._append(fd, path, line, size, expires_at, record.expires_at)
        else:
            self._write(path, line, expires_at)
        if old_user is not None and old_user != new_user:
            self._unmark(key, old_user)
        return True

    def _append(
        self, fd: int, path: str, line: bytes, size: int, expires_at: float, old_expiry: float
    ) -> None:
        """Append ``line`` to the session file ``fd`` of ``size`` bytes, which
        expires at ``old_expiry``; on failure cut it back to its old version."""
        try:
            written = 0
            while written < len(line):
                # A short write means the disk or a file size limit is reached;
                # the next one says which.
                count = os.pwrite(fd, line[written:], size + written)
                if count == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += count
            os.utime(fd, ns=(ns(expires_at), ns(expires_at)))
            if self.fsync:
                os.fsync(fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
                os.utime(fd, ns=(ns(old_expiry), ns(old_expiry)))
            raise SessionStoreError(f"Cannot write the session file {path!r}.", error) from error

    def _write(self, path: str, content: bytes, expires_at: float) -> None:
        """Replace the session file at ``path`` by one holding ``content``."""
        temp = temp_path(path)
        try:
            fd = self._create(temp)
            with open(fd, "wb") as file:
                file.write(content)
                file.flush()
                os.utime(fd, ns=(ns(expires_at), ns(expires_at)))
                if self.fsync:
                    os.fsync(fd)
            os.replace(temp, path)
            self._sync_dir(path)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise SessionStoreError(f"Cannot write the session file {path!r}.", error) from error

    def _create(self, temp: str) -> int:
        """Create the temporary file ``temp``, replacing one that a process
        killed before renaming it left behind. Under the lock, so no other
        write of the session is using it."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            return os.open(temp, flags, 0o600)
        except FileExistsError:
            os.unlink(temp)
            return os.open(temp, flags, 0o600)

    def _delete(self, key: str, stored: Record | None) -> bool:
        """Delete the session file of ``key``, which holds ``stored`` (or
        ``None``), with any temporary file of it a killed process left, then
        its user's marker, and tell whether a live session was there. Under
        the lock."""
        path = self._path(key)
        existed = self._unlink(path)
        self._unlink(temp_path(path))
        user_id = user_of(stored)
        if user_id is not None:
            self._unmark(key, user_id)
        return existed and stored is not None and stored.expires_at > self.clock()

    def _unlink(self, path: str) -> bool:
        """Delete the file at ``path`` and tell whether it was there."""
        try:
            os.unlink(path)
            self._sync_dir(path)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise SessionStoreError(f"Cannot delete the session file {path!r}.", error) from error
        return True

    def _sync_dir(self, path: str) -> None:
        """Flush the directory holding ``path``, with :attr:`fsync`."""
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
                # A process that died while writing may have left the expiry
                # of the newest line only in the line.
                live = os.stat(path).st_mtime_ns > ns(self.clock())
                if live or self._read(path) is not None:
                    os.utime(path, ns=(ns(expires_at), ns(expires_at)))
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
            return self._delete(key, self._read(path, expired=True))

    def _shards(self) -> list[str]:
        """Return the names of the subdirectories that hold sessions."""
        try:
            with os.scandir(self.dir) as entries:
                return [
                    entry.name
                    for entry in entries
                    if len(entry.name) == 2
                    and _HEX.issuperset(entry.name)
                    and entry.is_dir(follow_symlinks=False)
                ]
        except OSError as error:
            raise SessionStoreError(
                f"Cannot list the session directory {self.dir!r}.", error
            ) from error

    def _keys_in(self, shard: str) -> list[str]:
        """Return the keys of the session files in the subdirectory ``shard``."""
        directory = os.path.join(self.dir, shard)
        try:
            with os.scandir(directory) as entries:
                return [
                    entry.name
                    for entry in entries
                    if entry.name.startswith(shard)
                    and is_store_key(entry.name)
                    and entry.is_file(follow_symlinks=False)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            raise SessionStoreError(
                f"Cannot list the session directory {directory!r}.", error
            ) from error

    def purge(self) -> int:
        return sum(self._purge_shard(shard) for shard in self._shards())

    def _purge_shard(self, shard: str) -> int:
        """Purge one subdirectory, taking its lock only to delete.

        Files come and go meanwhile (renamed temporary files, sessions another
        purge or a logout deleted): a file that vanished is skipped.
        """
        now = self.clock()
        now_ns = ns(now)
        stale_ns = ns(time.time() - _STALE_TEMP_AGE)
        directory = os.path.join(self.dir, shard)
        expired = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        if entry.name.startswith(TEMP_PREFIX):
                            if entry.stat(follow_symlinks=False).st_ctime_ns < stale_ns:
                                os.unlink(entry.path)
                        elif (
                            entry.name.startswith(shard)
                            and is_store_key(entry.name)
                            and entry.stat(follow_symlinks=False).st_mtime_ns <= now_ns
                        ):
                            expired.append(entry.name)
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
            for key in expired:
                path = os.path.join(directory, key)
                try:
                    if os.stat(path).st_mtime_ns > now_ns:
                        continue
                    stored = self._read(path, expired=True)
                    if stored is not None and stored.expires_at > now:
                        continue
                    user_id = user_of(stored)
                    os.unlink(path)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp_path(path))
                except FileNotFoundError:
                    continue
                except OSError as error:
                    raise SessionStoreError(
                        f"Cannot delete the session file {path!r}.", error
                    ) from error
                removed += 1
                if user_id is not None:
                    self._unmark(key, user_id)
        return removed

    def scan(self) -> t.Iterator[tuple[str, Record]]:
        for shard in self._shards():
            for key in self._keys_in(shard):
                record = self._read(os.path.join(self.dir, shard, key))
                if record is not None:
                    yield key, record

    def clear(self) -> int:
        removed = 0
        for shard in self._shards():
            with self._locked(shard):
                for key in self._keys_in(shard):
                    removed += self._delete(key, self._read(self._path(key), expired=True))
        return removed

    keeps_old_versions = True
    indexes_users = True
