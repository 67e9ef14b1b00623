"""How long a session lives: the app's and the store's settings, and the
session's own flags, turned into an idle timeout and an expiry."""

from __future__ import annotations

import typing as t

from flask import current_app

from .store.base import MAX_SECONDS

if t.TYPE_CHECKING:
    from flask import Flask

    from .store.base import StoreDriver


class Lifetime:
    """The lifetime rules of the sessions kept in one store.

    A lifetime from :meth:`.ServerSession.set_expiry` comes first, then
    ``permanent_timeout`` or ``PERMANENT_SESSION_LIFETIME`` for a permanent
    session, then the store's ``expiration_timeout``; the store's
    ``absolute_timeout`` caps them all.

    :param store: the store whose timeouts and clock apply.
    """

    def __init__(self, store: StoreDriver) -> None:
        self.store = store

    def timeout(
        self,
        override: t.Mapping[str, float] | None,
        permanent: bool,
        app: Flask | None = None,
    ) -> tuple[float | None, bool]:
        """Return the idle timeout (``None`` for the store's
        ``expiration_timeout``) and whether the cookie outlives the browser.

        :param override: what :meth:`.ServerSession.set_expiry` stored, if anything.
        :param permanent: Flask's ``session.permanent``.
        :param app: the app; the current one by default.
        """
        if override is not None:
            if "until" in override:
                return override["until"] - self.store.clock(), True
            return min(override["idle"], MAX_SECONDS), True
        if permanent:
            timeout = self.store.permanent_timeout
            if timeout is None:
                lifetime = (app or current_app).permanent_session_lifetime.total_seconds()
                timeout = min(lifetime, MAX_SECONDS)  # what every store can represent
            return timeout, True
        return None, False

    def expires_at(
        self,
        created_at: float | None,
        override: t.Mapping[str, float] | None,
        permanent: bool,
        app: Flask | None = None,
    ) -> float:
        """Return when a session created at ``created_at`` (``None``: now)
        expires if this request is its last use."""
        timeout, _ = self.timeout(override, permanent, app)
        if created_at is None:
            created_at = self.store.clock()
        return self.store.expiry_for(created_at, timeout=timeout)
