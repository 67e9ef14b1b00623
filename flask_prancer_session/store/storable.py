"""Sessions as files in a directory, Prancer's ``Prancer::Session::Store::Storable``.

.. code-block:: python

    app.config["PRANCER_SESSION"] = {
        "store": {"driver": "storable", "options": {"dir": "/var/lib/myapp/sessions"}},
    }

Each session is one file named by its store key (a SHA-256 hex digest, never
the session id), in one of 256 subdirectories named by the key's first two
characters. Finding a session is one ``open``, however many there are.

A file is a log of the session's versions, one line each: a CRC-32 in hex,
a space, and a JSON object with ``created_at``, ``expires_at`` and ``data``.
A write appends a line in place, and a reader takes the last intact one, so
a reader or a process killed mid-write sees the old version or the new one,
never a torn one. Appending is what keeps writes cheap: replacing a file by
rename makes ext4 flush the new file's data first, several times the cost of
the whole append.

The file is rewritten to one line, under the temporary name ``.tmp-`` and
its own, then renamed over the old one: when it would grow past 8 KiB (or four
times its newest line); when a write removes a key or binds the session to
another user, so removed values and bindings do not linger in earlier lines;
when its last line is torn; and for every session ``flask session rekey``
sees (:attr:`~flask_prancer_session.changes.ChangeSet.erase_old_values`), so
no value in the clear or sealed with a retired key stays in the file. Until
then, replaced values stay in earlier lines. A temporary file left by a
process killed before its rename holds a version too: the session's next
rewrite replaces it, deleting the session deletes it, and purge deletes any
older than an hour. The blocks a rewrite frees are not overwritten: the file
system may keep their bytes until it reuses them.

The file's modification time is set to its expiry after each write, so
:meth:`~StorableStore.touch` is one ``utime`` and ``flask session purge``
never opens a live file; a session's expiry is the later of that time and
its newest line's ``expires_at`` (the two differ only while a write is in
progress, or after a process died in the middle of one).

Options:

``dir`` (required)
    The directory of the session files, created with mode 0700 if missing. It
    must belong to the user the app runs as and must not be writable by group
    or others, as ssh's ``StrictModes`` requires of ``~/.ssh``: anyone who can
    write there can plant or steal sessions. A symbolic link is refused; give
    the real path. Its subdirectories are checked the same way when a session
    in them is read or written, and a session file of another user or a
    symbolic link in its place is refused, both with
    :class:`~flask_prancer_session.errors.SessionStoreError`.
``fsync`` (default ``False``)
    Flush each written file, and the directory after renaming it, to the disk
    before the request ends. Without it a power loss or kernel crash can lose
    the last seconds of session writes, as with Plack's and Django's file
    stores; a crash of the app itself never loses or tears a file either way.
    With it every write waits for the disk.

plus the common ``expiration_timeout``, ``permanent_timeout``,
``absolute_timeout``, ``autopurge`` and ``autopurge_probability``.

Files are 0600. Changes and removals are applied under an exclusive ``flock`` on a
lock file per subdirectory, so the processes and threads of one machine never
lose each other's writes and a removed session stays removed. It needs a POSIX
system, and every process using ``dir`` must be on the same machine (``flock``
is not reliable over NFS): use the database or Redis store for several machines.

:meth:`~StorableStore.scan` and :meth:`~StorableStore.clear` (the ``flask
session`` commands) list one subdirectory at a time; ``clear`` deletes under
its lock.

Sessions by user ("log out everywhere"). A session bound to a user (see
:data:`~flask_prancer_session.changes.USER_KEY`) is listed by an empty marker
file ``dir/users/<SHA-256 of the user id>/<store key>``, created before the
session file is written and deleted after it is rewritten or deleted, under
the session's lock: so every session file bound to a user, live or expired,
has its marker, and creating or deleting one is a single system call.
:meth:`~StorableStore.sessions_of` and :meth:`~StorableStore.remove_user`
list the markers and read each session, counting only those live and still
bound to the user. A marker whose session is gone or bound elsewhere (left by
a crash) is deleted only under that session's lock, once checked again, so a
concurrent login is never unlisted. ``users`` and its subdirectories are
checked like the others.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import stat
import tempfile
import time
import typing as t
import zlib

from ..changes import ChangeSet
from ..changes import Record
from ..changes import user_id_of
from ..changes import USER_KEY
from ..errors import ConfigurationError
from ..errors import SessionStoreError
from ..ids import is_store_key
from .base import DEFAULT_EXPIRATION_TIMEOUT
from .base import Seconds
from .base import StoreDriver

logger = logging.getLogger(__name__)

_LOCK_NAME = ".lock"
_TEMP_PREFIX = ".tmp-"
_USERS = "users"
#: Temporary files older than this (seconds) are left over from a crash.
_STALE_TEMP_AGE = 3600
#: How often a marker is tried again when its directory, emptied by another
#: process, vanishes between its creation and the marker's.
_MARK_ATTEMPTS = 100
_HEX = frozenset("0123456789abcdef")
#: A session file is rewritten rather than appended to once it would grow past
#: this many bytes, or four times its newest line: two blocks of most file
#: systems, so a small session never takes more room on the disk than that.
_COMPACT_AT = 8192


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


def _digest(user_id: str) -> str:
    # surrogatepass: a user id read from JSON may hold a lone surrogate.
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


def _user_of(record: Record | None) -> str | None:
    value = None if record is None else record.data.get(USER_KEY)
    return None if value is None else user_id_of(value)


def _temp_path(path: str) -> str:
    """Return the name the session file at ``path`` is written under before
    it is renamed: one per session, so a process killed in between leaves at
    most one, which the session's next rewrite or deletion removes."""
    directory, name = os.path.split(path)
    return os.path.join(directory, _TEMP_PREFIX + name)


def _line(created_at: float, expires_at: float, data: dict[str, str]) -> bytes:
    """Return one version of a session as a line of its file."""
    payload = json.dumps({"created_at": created_at, "expires_at": expires_at, "data": data})
    encoded = payload.encode()
    return b"%08x %s\n" % (zlib.crc32(encoded), encoded)


def _intact(line: bytes) -> bool:
    """Tell whether ``line`` (without its newline) holds the CRC of its payload."""
    if line[8:9] != b" ":
        return False
    try:
        return int(line[:8], 16) == zlib.crc32(line[9:])
    except ValueError:
        return False


def _newest(content: bytes) -> tuple[bytes | None, bool]:
    """Return the payload of the last intact line of a session file's
    ``content``, and whether nothing torn follows it."""
    end = len(content)
    clean = True
    while end > 0:
        if content[end - 1] == 0x0A:
            start = content.rfind(b"\n", 0, end - 1) + 1
            if _intact(content[start : end - 1]):
                return content[start + 9 : end - 1], clean
        else:
            start = content.rfind(b"\n", 0, end) + 1
        clean = False
        end = start
    return None, False


def _finite(value: object) -> t.TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        problem = _unsafe(path, status)
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
                os.path.join(path, _LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
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
        payload, clean = _newest(content)
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
            or not _finite(created_at)
            or not _finite(expires_at)
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
        old_user = _user_of(stored)
        if record is None:
            if changes.created_at is None:
                if changes.erase_old_values and stored is not None:
                    # Expired meanwhile: the file purge would delete goes now,
                    # with the values it holds.
                    self._delete(key, stored)
                elif changes.erase_old_values:
                    self._unlink(_temp_path(path))
                return False
            data = changes.merged_into({})
            created_at = changes.created_at
        else:
            data, created_at = changes.merged_into(record.data), record.created_at
        if not data:
            if record is not None:
                self._delete(key, stored)
            return False
        new_user = _user_of(Record(data, created_at, 0))
        if new_user is not None and new_user != old_user:
            self._mark(key, new_user)
        expires_at = self.expiry_for(created_at, timeout=changes.timeout)
        line = _line(created_at, expires_at, data)
        if (
            fd is not None
            and size is not None
            and record is not None
            and not changes.removed
            and data.get(USER_KEY) == record.data.get(USER_KEY)
            and not changes.erase_old_values
            and size + len(line) <= max(_COMPACT_AT, 4 * len(line))
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
            os.utime(fd, ns=(_ns(expires_at), _ns(expires_at)))
            if self.fsync:
                os.fsync(fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
                os.utime(fd, ns=(_ns(old_expiry), _ns(old_expiry)))
            raise SessionStoreError(f"Cannot write the session file {path!r}.", error) from error

    def _write(self, path: str, content: bytes, expires_at: float) -> None:
        """Replace the session file at ``path`` by one holding ``content``."""
        temp = _temp_path(path)
        try:
            fd = self._create(temp)
            with open(fd, "wb") as file:
                file.write(content)
                file.flush()
                os.utime(fd, ns=(_ns(expires_at), _ns(expires_at)))
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
        self._unlink(_temp_path(path))
        user_id = _user_of(stored)
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
                live = os.stat(path).st_mtime_ns > _ns(self.clock())
                if live or self._read(path) is not None:
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
        now_ns = _ns(now)
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
                    user_id = _user_of(stored)
                    os.unlink(path)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(_temp_path(path))
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

    def _user_dir(self, user_id: str, *, create: bool = False) -> str | None:
        """Return the directory of the markers of ``user_id``, creating it if
        ``create``; ``None`` if it does not exist."""
        users = os.path.join(self.dir, _USERS)
        directory = os.path.join(users, _digest(user_id))
        if self._private_dir(users, create=create) and self._private_dir(directory, create=create):
            return directory
        return None

    def _mark(self, key: str, user_id: str) -> None:
        """List ``key`` among the sessions of ``user_id``. Under the lock,
        before the session file is bound."""
        marker = os.path.join(self.dir, _USERS, _digest(user_id), key)
        try:
            for _ in range(_MARK_ATTEMPTS):
                try:
                    self._user_dir(user_id, create=True)
                    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
                except FileNotFoundError:
                    # The directory was emptied and removed by _unmark meanwhile.
                    continue
                self._sync_dir(marker)
                return
        except OSError as error:
            raise SessionStoreError("Cannot index the session by user.", error) from error
        raise SessionStoreError("Cannot index the session by user: its directory keeps vanishing.")

    def _unmark(self, key: str, user_id: str) -> None:
        """Unlist ``key`` from the sessions of ``user_id``, and the user's
        directory with its last marker. Under the lock, once the session file
        is no longer bound to the user."""
        try:
            directory = self._user_dir(user_id)
            if directory is None:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, key))
            # Fails unless that was the user's last marker.
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        except OSError as error:
            raise SessionStoreError("Cannot unindex the session by user.", error) from error

    def _markers(self, user_id: str) -> list[str]:
        """Return the keys listed among the sessions of ``user_id``."""
        try:
            directory = self._user_dir(user_id)
            if directory is None:
                return []
            with os.scandir(directory) as entries:
                return [
                    entry.name
                    for entry in entries
                    if is_store_key(entry.name) and entry.is_file(follow_symlinks=False)
                ]
        except FileNotFoundError:
            return []
        except OSError as error:
            raise SessionStoreError("Cannot list the sessions of a user.", error) from error

    def sessions_of(self, user_id: str) -> dict[str, Record]:
        sessions = {}
        now = self.clock()
        for key in self._markers(user_id):
            path = self._path(key)
            stored = self._read(path, expired=True)
            if stored is not None and _user_of(stored) == user_id:
                # An expired one keeps its marker until purge deletes both.
                if stored.expires_at > now:
                    sessions[key] = stored
                continue
            # Stale, unless the session was bound again meanwhile.
            with self._locked(key[:2]):
                if _user_of(self._read(path, expired=True)) != user_id:
                    self._unmark(key, user_id)
        return sessions

    def remove_user(self, user_id: str) -> int:
        removed = 0
        for key in self._markers(user_id):
            path = self._path(key)
            with self._locked(key[:2]):
                stored = self._read(path, expired=True)
                if _user_of(stored) == user_id:
                    removed += self._delete(key, stored)
                else:
                    self._unmark(key, user_id)
        return removed
