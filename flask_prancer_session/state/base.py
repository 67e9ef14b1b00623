"""The interface every state driver implements.

A state driver carries the session id between browser and server: it reads
the id from a request and writes it into (or removes it from) a response. It
never sees session data.
"""

from __future__ import annotations

import abc
import typing as t

from ..ids import is_well_formed

if t.TYPE_CHECKING:
    from datetime import datetime

    from flask import Flask
    from flask import Request
    from flask import Response


class StateDriver(abc.ABC):
    """Base class for state drivers."""

    #: The request header that carries the id, added to the ``Vary`` header of
    #: every response whose session was used, so that caches keep one
    #: visitor's pages from another.
    vary_header: str = "Cookie"

    @abc.abstractmethod
    def extract(self, app: Flask, request: Request) -> str | None:
        """Return the session id the request carries, or ``None``.

        Anything that is not an intact id issued by this app (tampered,
        forged, malformed) must give ``None``: the visitor then gets a fresh
        session, and the store is never asked about an id the client chose.
        """

    def extract_lazily(self, app: Flask, request: Request) -> t.Callable[[], str | None] | None:
        """Return ``None`` if the request carries no id, else a function that
        returns what :meth:`extract` would, to be called when the session is
        first used. The default calls :meth:`extract` now; a driver whose
        check costs something (a signature) defers it."""
        session_id = self.extract(app, request)
        return None if session_id is None else lambda: session_id

    @abc.abstractmethod
    def finalize(
        self,
        app: Flask,
        response: Response,
        session_id: str,
        *,
        expires: datetime,
        persistent: bool,
    ) -> None:
        """Make the response carry ``session_id``.

        :param expires: when the stored session expires unless used again.
        :param persistent: whether the id should outlive the browser session
            (until ``expires``): true for a permanent session, or one with its
            own lifetime.
        """

    @abc.abstractmethod
    def expire(self, app: Flask, response: Response) -> None:
        """Make the browser forget its session id."""

    def check_app(self, app: Flask) -> None:
        """Refuse, at ``init_app``, options that are wrong together with
        ``app``'s config. The default accepts any.

        :raise ConfigurationError: naming the driver's option, or the key of
            ``app.config``.
        """
        return None

    def id_from(self, app: Flask, value: str) -> str | None:
        """Return the session id in ``value`` as the browser holds it (a cookie
        value, say), or ``None`` if it is not intact. For ``flask session
        show``; the default accepts a bare, well-formed id."""
        return value if is_well_formed(value) else None

    def needs_refresh(self, app: Flask, request: Request, session_id: str) -> bool:
        """Tell whether the request carries ``session_id`` in a form that
        should be sent again (signed with a retired key, say), although the
        session has not changed. The default never asks."""
        return False
