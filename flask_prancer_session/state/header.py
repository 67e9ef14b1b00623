"""The session id in a request header, for API and mobile clients.

.. code-block:: python

    app.config["PRANCER_SESSION"] = {
        "state": {"driver": "header", "options": {"header": "X-Session-Token"}},
    }

The client sends the signed id in a header and the response returns a new or
changed id in the same header; an empty value tells the client to forget its
token. No cookie is read or set.
"""

from __future__ import annotations

import typing as t

from flask import has_request_context
from flask import request

from ..errors import ConfigurationError
from .signed import SignedIdState

if t.TYPE_CHECKING:
    from datetime import datetime

    from flask import Flask
    from flask import Request
    from flask import Response

#: Characters allowed in an HTTP header name (RFC 9110 "token").
_TOKEN_CHARACTERS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class HeaderState(SignedIdState):
    """Carry the session id in a request and response header.

    :param header: the header's name.
    :param expose: add the header to ``Access-Control-Expose-Headers`` of the
        responses that carry it, so that a script of another origin allowed
        by the app's CORS policy can read it.
    """

    def __init__(self, *, header: str = "X-Session-Token", expose: bool = True) -> None:
        if not isinstance(header, str) or not header or not _TOKEN_CHARACTERS.issuperset(header):
            raise ConfigurationError(f"must be an HTTP header name, not {header!r}", "header")
        if header.lower() in {"cookie", "set-cookie", "authorization"}:
            raise ConfigurationError(f"must be a header of its own, not {header!r}", "header")
        if not isinstance(expose, bool):
            raise ConfigurationError("must be true or false", "expose")
        #: The header's name.
        self.header = header
        self.expose = expose
        self.vary_header = header

    def carried(self, request: Request) -> str | None:
        return request.headers.get(self.header)

    def finalize(
        self,
        app: Flask,
        response: Response,
        session_id: str,
        *,
        expires: datetime,
        persistent: bool,
    ) -> None:
        value = self.sign(app, session_id)
        # A token has no expiry to refresh: the one the client sent stands.
        if not has_request_context() or self.carried(request) != value:
            self._send(response, value)

    def expire(self, app: Flask, response: Response) -> None:
        self._send(response, "")

    def _send(self, response: Response, value: str) -> None:
        response.headers[self.header] = value
        # Shared caches know Set-Cookie, not this header: a response that
        # hands out a token is for its client alone.
        response.cache_control.public = False
        response.cache_control.private = True
        if self.expose:
            # A set parsed from the header: a change to it is written back
            # only by assigning it (a CORS extension may have set the header).
            exposed = response.access_control_expose_headers
            if exposed is None:
                response.headers["Access-Control-Expose-Headers"] = self.header
            elif self.header not in exposed:
                exposed.add(self.header)
                response.access_control_expose_headers = exposed
