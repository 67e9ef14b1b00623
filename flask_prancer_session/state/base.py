"""The interface every state driver implements.

A state driver carries the session id between browser and server: it reads
the id from a request and writes it into (or removes it from) a response. It
never sees session data.
"""

from __future__ import annotations

import abc
import typing as t

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response


class StateDriver(abc.ABC):
    """Base class for state drivers."""

    @abc.abstractmethod
    def extract(self, app: Flask, request: Request) -> str | None:
        """Return the session id the request carries, or ``None``.

        Anything that is not an intact id issued by this app (tampered,
        forged, malformed) must give ``None``: the visitor then gets a fresh
        session, and the store is never asked about an id the client chose.
        """

    @abc.abstractmethod
    def finalize(self, app: Flask, response: Response, session_id: str, *, permanent: bool) -> None:
        """Make the response carry ``session_id``.

        :param permanent: the session's :attr:`~flask.sessions.SessionMixin.permanent`
            flag, for drivers that can make the id outlive the browser session.
        """

    @abc.abstractmethod
    def expire(self, app: Flask, response: Response) -> None:
        """Make the browser forget its session id."""
