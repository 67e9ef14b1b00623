"""How long a session lives: the app's and the store's settings, and the
session's own flags, turned into an idle timeout and an expiry."""

from __future__ import annotations

import functools
import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask import current_app
from flask import session as flask_session

from .store.base import MAX_SECONDS

if t.TYPE_CHECKING:
    from flask import Flask

    from .store.base import StoreDriver


#: The session key of a per-session lifetime (:meth:`.ServerSession.set_expiry`).
EXPIRY_KEY = "_prancer_expiry"

#: The session keys that only say how long to keep the session: their change
#: can turn a browser-session cookie into a persistent one or back, and a
#: session holding nothing else is not stored.
LIFETIME_KEYS = frozenset({"_permanent", EXPIRY_KEY})


def expiry_override_for(value: float | timedelta | datetime | None) -> dict[str, float] | None:
    """Return what :meth:`.ServerSession.set_expiry` stores for ``value``:
    ``{"idle": seconds}`` for a duration of inactivity, ``{"until": timestamp}``
    for a moment (naive means UTC), ``None`` to go back to the app's lifetime.

    :raise ValueError: for a duration that is not positive.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return {"until": value.timestamp()}
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(
            f"The session lifetime must be a positive duration, not {value!r};"
            " call expire() to end the session now."
        )
    return {"idle": float(seconds)}


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


_View = t.TypeVar("_View", bound=t.Callable[..., t.Any])


def no_refresh(view: _View) -> _View:
    """Decorate a view so that its requests read and write the session
    without extending its idle expiry or refreshing its cookie (see
    :meth:`.ServerSession.no_refresh`). Put it under the route decorator:

    .. code-block:: python

        @app.get("/notifications")
        @no_refresh
        def notifications():
            ...
    """

    @functools.wraps(view)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        # Another session interface's session has no such method.
        current = flask_session._get_current_object()  # type: ignore[attr-defined]
        if callable(getattr(current, "no_refresh", None)):
            current.no_refresh()
        return view(*args, **kwargs)

    return t.cast(_View, wrapper)
