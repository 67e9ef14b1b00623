"""The interface every store driver implements.

A store keeps sessions under a key (never the session id itself, see
:func:`~flask_prancer_session.ids.store_key`) and applies each request's
:class:`~flask_prancer_session.changes.ChangeSet` atomically onto the copy it
holds. Expiry is the store's job: an expired session is never returned.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import random
import threading
import time
import typing as t
import weakref
from datetime import timedelta

from ..changes import ChangeSet
from ..changes import Record
from ..errors import ConfigurationError

logger = logging.getLogger(__name__)

#: The default idle timeout in seconds, as in Prancer's database store.
DEFAULT_EXPIRATION_TIMEOUT = 1800
#: The longest timeout any option accepts: ten years, which every backend can
#: represent (Redis TTLs in milliseconds, cachelib timeouts, SQL doubles).
MAX_SECONDS = 10 * 365 * 86400
#: The least time between two automatic purges of one store in one process.
AUTOPURGE_INTERVAL = 60.0

#: A duration as options accept it: seconds, or a :class:`~datetime.timedelta`.
Seconds: t.TypeAlias = "float | timedelta"


class StoreDriver(abc.ABC):
    """Base class for store drivers.

    Subclasses implement :meth:`fetch`, :meth:`apply`, :meth:`touch` and
    :meth:`remove`, and :meth:`purge` if expired sessions are not removed by
    the backend itself. Every backend failure is raised as
    :class:`~flask_prancer_session.errors.SessionStoreError`, never returned as
    "no session"; data that cannot be decoded is logged and treated as no
    session.

    Durations are seconds or :class:`~datetime.timedelta`, at most ten years.

    :param expiration_timeout: inactivity after which a session that is not
        permanent expires. Every request that uses the session extends it
        (sliding).
    :param permanent_timeout: inactivity after which a permanent session
        (``session.permanent = True``) expires; ``None`` follows the app's
        ``PERMANENT_SESSION_LIFETIME``.
    :param absolute_timeout: time after its creation at which any session
        expires however active it is. ``None`` means no such limit.
    :param autopurge: remove expired sessions in the background, started by
        requests that save a session, with probability
        ``autopurge_probability`` and at most once a minute per process.
    :param autopurge_probability: between 0 and 1.
    """

    #: The time source, in seconds since the epoch. Tests replace it to move
    #: time forward instead of sleeping.
    clock: t.Callable[[], float] = staticmethod(time.time)

    #: ``True`` for backends that delete expired entries by themselves (a
    #: TTL); :meth:`purge` then has nothing to do and returns ``0``.
    expires_natively: t.ClassVar[bool] = False

    def __init__(
        self,
        *,
        expiration_timeout: Seconds = DEFAULT_EXPIRATION_TIMEOUT,
        permanent_timeout: Seconds | None = None,
        absolute_timeout: Seconds | None = None,
        autopurge: bool = False,
        autopurge_probability: float = 0.1,
    ) -> None:
        self.expiration_timeout = positive_seconds(expiration_timeout, "expiration_timeout")
        self.permanent_timeout = (
            None
            if permanent_timeout is None
            else positive_seconds(permanent_timeout, "permanent_timeout")
        )
        self.absolute_timeout = (
            None
            if absolute_timeout is None
            else positive_seconds(absolute_timeout, "absolute_timeout")
        )
        if not isinstance(autopurge, bool):
            raise ConfigurationError("must be true or false", "autopurge")
        self.autopurge = autopurge
        if (
            isinstance(autopurge_probability, bool)
            or not isinstance(autopurge_probability, (int, float))
            or not 0 <= autopurge_probability <= 1
        ):
            raise ConfigurationError("must be a number from 0 to 1", "autopurge_probability")
        self.autopurge_probability = float(autopurge_probability)
        self._purge_lock = threading.Lock()
        self._last_purge = -math.inf
        #: The thread of the latest automatic purge, for tests and shutdown
        #: code that want to wait for it.
        self.purge_thread: threading.Thread | None = None
        _reset_after_fork(self)

    def close(self) -> None:
        """Release what the store holds: wait for a purge running in the
        background, and close the connections of a client or engine the store
        made (one it was given belongs to the caller). A store used again
        after this opens new connections as it needs them.

        :class:`.PrancerSession` closes the stores it built from the config
        when their app is garbage-collected or the process exits.
        """
        thread = self.purge_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _after_fork(self) -> None:
        """Replace the locks of this process in a forked child (a gunicorn
        worker of a ``--preload`` master): one held by a thread of the parent
        at the fork would stay held for good, there being no such thread."""
        self._purge_lock = threading.Lock()
        self.purge_thread = None

    @abc.abstractmethod
    def fetch(self, key: str) -> Record | None:
        """Return the session stored under ``key``, or ``None`` if there is none
        or it has expired."""

    @abc.abstractmethod
    def apply(self, key: str, changes: ChangeSet) -> bool:
        """Apply ``changes`` atomically onto the session stored under ``key`` now,
        and tell whether a session is stored under ``key`` afterwards.

        Keys the changes do not mention keep their stored values, whoever wrote
        them. The expiry is moved to :meth:`expiry_for` the session's creation
        time and :attr:`.ChangeSet.timeout`. If no live session is stored under
        ``key``, the changes create one when :attr:`.ChangeSet.created_at` is
        set and are dropped otherwise, so a session expired by one request is
        not revived by another. A session left without keys is deleted, in the
        same atomic step, and ``False`` is returned.
        """

    @abc.abstractmethod
    def touch(self, key: str, expires_at: float) -> None:
        """Move the expiry of the session under ``key`` to ``expires_at``,
        without rewriting its data. Does nothing if there is no such session."""

    @abc.abstractmethod
    def remove(self, key: str) -> bool:
        """Delete the session under ``key`` and tell whether a live one was there.

        Linearisable with :meth:`apply`: once this returns, no write that was
        in flight can bring the session back.
        """

    def purge(self) -> int:
        """Delete the expired sessions and return how many were deleted.

        The default does nothing and returns ``0``: it is right for backends
        that expire entries by themselves, which set :attr:`expires_natively`.
        """
        return 0

    #: ``True`` for stores that may keep earlier versions of a session's
    #: values beside its current ones (the storable store's append-only file),
    #: which a change with :attr:`.ChangeSet.erase_old_values` drops:
    #: ``flask session rekey`` then rewrites every session, not only those
    #: with a value to re-seal.
    keeps_old_versions: t.ClassVar[bool] = False

    #: ``True`` for stores that keep an index of sessions by user, kept
    #: atomically with the sessions, for :meth:`sessions_of` and
    #: :meth:`remove_user` ("log out everywhere").
    indexes_users: t.ClassVar[bool] = False

    def scan(self) -> t.Iterator[tuple[str, Record]]:
        """Yield the key and record of every live session, in bounded memory.

        For the ``flask session`` commands. The default raises
        :class:`NotImplementedError`: the backend cannot list its sessions.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its sessions.")

    def clear(self) -> int:
        """Delete every session of this store (of this application, where a
        backend is shared) and return how many were deleted."""
        keys = [key for key, _ in self.scan()]
        return sum(self.remove(key) for key in keys)

    def sessions_of(self, user_id: str) -> dict[str, Record]:
        """Return the live sessions bound to ``user_id``, by key.

        :raise NotImplementedError: unless :attr:`indexes_users`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not index sessions by user.")

    def remove_user(self, user_id: str) -> int:
        """Delete every session bound to ``user_id`` and return how many live
        ones were deleted. Like :meth:`remove`, no write in flight can bring
        one back.

        :raise NotImplementedError: unless :attr:`indexes_users`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not index sessions by user.")

    def expiry_for(
        self, created_at: float, now: float | None = None, timeout: float | None = None
    ) -> float:
        """Return when a session created at ``created_at`` and used at ``now``
        expires: ``timeout`` (by default :attr:`expiration_timeout`) from now,
        capped by the absolute timeout."""
        if now is None:
            now = self.clock()
        expires_at = now + (self.expiration_timeout if timeout is None else timeout)
        if self.absolute_timeout is not None:
            expires_at = min(expires_at, created_at + self.absolute_timeout)
        return expires_at

    def touch_due(self, created_at: float, expires_at: float, timeout: float | None = None) -> bool:
        """Tell whether a session that was only read should have its expiry
        extended.

        A touch is skipped until the expiry would move by a tenth of the idle
        timeout (at most a minute), so a burst of page views costs one write.
        """
        if timeout is None:
            timeout = self.expiration_timeout
        gain = self.expiry_for(created_at, timeout=timeout) - expires_at
        return gain >= min(60.0, timeout / 10)

    def maybe_purge(self) -> threading.Thread | None:
        """Start :meth:`purge` in a background thread if :attr:`autopurge` is
        on, with probability :attr:`autopurge_probability`, unless this process
        purged less than a minute ago or a purge is running.

        The request that calls this never waits for the purge, and a purge
        that fails is logged, never raised. Returns the thread, or ``None``.
        """
        if not self.autopurge or random.random() >= self.autopurge_probability:
            return None
        now = self.clock()
        if abs(now - self._last_purge) < AUTOPURGE_INTERVAL or not self._purge_lock.acquire(False):
            return None
        self._last_purge = now
        self.purge_thread = threading.Thread(
            target=self._purge_in_background, name="prancer-session-purge", daemon=True
        )
        self.purge_thread.start()
        return self.purge_thread

    def _purge_in_background(self) -> None:
        try:
            self.purge()
        except Exception:
            logger.exception("Purging expired sessions failed; the next purge will try again.")
        finally:
            self._purge_lock.release()


def positive_seconds(value: object, key: str) -> float:
    """Return ``value`` (seconds or a :class:`~datetime.timedelta`) as seconds,
    for a store option named ``key``.

    :raise ConfigurationError: naming ``key``, unless it is a positive duration
        of at most :data:`MAX_SECONDS`.
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= MAX_SECONDS
    ):
        raise ConfigurationError(
            f"must be a positive number of seconds (or a timedelta) of at most ten years,"
            f" not {value!r}",
            key,
        )
    return float(value)


def _reset_after_fork(store: StoreDriver) -> None:
    """Have :meth:`StoreDriver._after_fork` run in every child forked from now,
    for as long as ``store`` lives."""
    ref = weakref.ref(store)

    def reset() -> None:
        alive = ref()
        if alive is not None:
            alive._after_fork()

    os.register_at_fork(after_in_child=reset)
