"""The storable store's index of sessions by user: an empty marker file
``users/<SHA-256 of the user id>/<store key>`` per bound session."""

from __future__ import annotations

import contextlib
import os
import typing as t

from ...changes import Record
from ...errors import SessionStoreError
from ...ids import is_store_key
from ..common import user_digest
from .fileformat import user_of

#: The directory of the markers, under the store's ``dir``.
USERS = "users"
#: How often a marker is tried again when its directory, emptied by another
#: process, vanishes between its creation and the marker's.
MARK_ATTEMPTS = 100


class UserIndex:
    """The marker index, mixed into :class:`.StorableStore`, whose directory
    checks, locks and file reads it uses."""

    if t.TYPE_CHECKING:
        dir: str
        clock: t.Callable[[], float]

        def _private_dir(self, path: str, *, create: bool = True) -> bool: ...
        def _sync_dir(self, path: str) -> None: ...
        def _path(self, key: str) -> str: ...
        def _read(self, path: str, *, expired: bool = False) -> Record | None: ...
        def _locked(self, shard: str) -> t.ContextManager[None]: ...
        def _delete(self, key: str, stored: Record | None) -> bool: ...

    def _user_dir(self, user_id: str, *, create: bool = False) -> str | None:
        """Return the directory of the markers of ``user_id``, creating it if
        ``create``; ``None`` if it does not exist."""
        users = os.path.join(self.dir, USERS)
        directory = os.path.join(users, user_digest(user_id))
        if self._private_dir(users, create=create) and self._private_dir(directory, create=create):
            return directory
        return None

    def _mark(self, key: str, user_id: str) -> None:
        """List ``key`` among the sessions of ``user_id``. Under the lock,
        before the session file is bound."""
        marker = os.path.join(self.dir, USERS, user_digest(user_id), key)
        try:
            for _ in range(MARK_ATTEMPTS):
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
            if stored is not None and user_of(stored) == user_id:
                # An expired one keeps its marker until purge deletes both.
                if stored.expires_at > now:
                    sessions[key] = stored
                continue
            # Stale, unless the session was bound again meanwhile.
            with self._locked(key[:2]):
                if user_of(self._read(path, expired=True)) != user_id:
                    self._unmark(key, user_id)
        return sessions

    def remove_user(self, user_id: str) -> int:
        removed = 0
        for key in self._markers(user_id):
            path = self._path(key)
            with self._locked(key[:2]):
                stored = self._read(path, expired=True)
                if user_of(stored) == user_id:
                    removed += self._delete(key, stored)
                else:
                    self._unmark(key, user_id)
        return removed
