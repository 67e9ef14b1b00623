"""The interface every store driver implements.

A store keeps sessions under a key (never the session id itself, see
:func:`~flask_prancer_session.ids.store_key`) and applies each request's
:class:`~flask_prancer_session.changes.ChangeSet` atomically onto the copy it
holds. Expiry is the store's job: an expired session is never returned.
"""

from __future__ import annotations

import abc
import math
import random
import time
import typing as t

from ..changes import ChangeSet
from ..changes import Record
from ..errors import ConfigurationError

#: The default idle timeout in seconds, as in Prancer's database store.
DEFAULT_EXPIRATION_TIMEOUT = 1800


class StoreDriver(abc.ABC):
    """Base class for store drivers.

    Subclasses implement :meth:`fetch`, :meth:`apply`, :meth:`touch` and
    :meth:`remove`, and :meth:`purge` if expired sessions are not removed by
    the backend itself. Every backend failure is raised as
    :class:`~flask_prancer_session.errors.SessionStoreError`, never returned as
    "no session"; data that cannot be decoded is logged and treated as no
    session.

    :param expiration_timeout: seconds of inactivity after which a session
        expires. Every request that uses the session extends it (sliding).
    :param absolute_timeout: seconds after its creation at which a session
        expires however active it is. ``None`` means no such limit.
    :param autopurge: remove expired sessions from within requests, with
        probability ``autopurge_probability`` per request.
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
        expiration_timeout: float = DEFAULT_EXPIRATION_TIMEOUT,
        absolute_timeout: float | None = None,
        autopurge: bool = False,
        autopurge_probability: float = 0.1,
    ) -> None:
        self.expiration_timeout = positive_seconds(expiration_timeout, "expiration_timeout")
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

    @abc.abstractmethod
    def fetch(self, key: str) -> Record | None:
        """Return the session stored under ``key``, or ``None`` if there is none
        or it has expired."""

    @abc.abstractmethod
    def apply(self, key: str, changes: ChangeSet) -> None:
        """Apply ``changes`` atomically onto the session stored under ``key`` now.

        Keys the changes do not mention keep their stored values, whoever wrote
        them. The expiry is moved to :meth:`expiry_for` the session's creation
        time. If no live session is stored under ``key``, the changes create one
        when :attr:`.ChangeSet.created_at` is set and are dropped otherwise, so
        a session expired by one request is not revived by another.
        """

    @abc.abstractmethod
    def touch(self, key: str, expires_at: float) -> None:
        """Move the expiry of the session under ``key`` to ``expires_at``,
        without rewriting its data. Does nothing if there is no such session."""

    @abc.abstractmethod
    def remove(self, key: str) -> None:
        """Delete the session under ``key``, if there is one."""

    def purge(self) -> int:
        """Delete the expired sessions and return how many were deleted.

        The default does nothing and returns ``0``: it is right for backends
        that expire entries by themselves, which set :attr:`expires_natively`.
        """
        return 0

    def expiry_for(self, created_at: float, now: float | None = None) -> float:
        """Return when a session created at ``created_at`` and used at ``now``
        expires: the idle timeout from now, capped by the absolute timeout."""
        if now is None:
            now = self.clock()
        expires_at = now + self.expiration_timeout
        if self.absolute_timeout is not None:
            expires_at = min(expires_at, created_at + self.absolute_timeout)
        return expires_at

    def touch_due(self, created_at: float, expires_at: float) -> bool:
        """Tell whether a session that was only read should have its expiry
        extended.

        A touch is skipped until the expiry would move by a tenth of the idle
        timeout (at most a minute), so a burst of page views costs one write.
        """
        gain = self.expiry_for(created_at) - expires_at
        return gain >= min(60.0, self.expiration_timeout / 10)

    def maybe_purge(self) -> int:
        """Run :meth:`purge` with probability :attr:`autopurge_probability` if
        :attr:`autopurge` is on; return how many sessions were deleted."""
        if self.autopurge and random.random() < self.autopurge_probability:
            return self.purge()
        return 0


def positive_seconds(value: object, key: str) -> float:
    """Return ``value`` as seconds, for a store option named ``key``.

    :raise ConfigurationError: naming ``key``, unless it is a positive, finite number.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"must be a positive number of seconds, not {value!r}", key)
    return float(value)
