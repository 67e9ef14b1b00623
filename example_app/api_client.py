"""A client of the example app's JSON API that keeps its session in a header.

.. code-block:: text

    python -m example_app.api_client http://127.0.0.1:5000 [username]

It sends the ``X-Session-Token`` the app returned with every request, takes
the new one when a response carries it (after logging in, the id changes),
and forgets it when the app sends it back empty. No cookie is involved.
"""

from __future__ import annotations

import json
import sys
import typing as t
import urllib.request

HEADER = "X-Session-Token"


class Client:
    """Calls the API at ``base_url``, carrying the session token along."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token: str | None = None

    def call(self, method: str, path: str, body: object = None) -> t.Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header(HEADER, self.token)
        with urllib.request.urlopen(request, timeout=10) as response:
            token = response.headers.get(HEADER)
            if token is not None:
                self.token = token or None  # empty: the session ended
            return json.loads(response.read())


def main(base_url: str, username: str = "ann", out: t.TextIO = sys.stdout) -> None:
    """Count, log in, count, list the devices, log out, and print each answer."""
    client = Client(base_url)
    steps = [
        ("GET", "/api/count", None),
        ("GET", "/api/count", None),
        ("POST", "/api/login", {"username": username}),
        ("GET", "/api/count", None),
        ("GET", "/api/devices", None),
        ("POST", "/api/logout", None),
        ("GET", "/api/count", None),
    ]
    for method, path, body in steps:
        print(f"{method} {path}: {json.dumps(client.call(method, path, body))}", file=out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m example_app.api_client BASE_URL [USERNAME]")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "ann")
