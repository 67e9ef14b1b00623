"""A tiny app served in its own process by ``test_multiprocess.py``.

Run as ``python -m tests.multiprocess_app``, with the store config as JSON in
``PRANCER_TEST_STORE``. It serves on a free loopback port and prints the port.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from flask import Flask
from flask import session
from werkzeug.serving import make_server

from flask_prancer_session import PrancerSession


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "shared by every process"
    app.config["PRANCER_SESSION"] = {"store": json.loads(os.environ["PRANCER_TEST_STORE"])}
    PrancerSession(app)

    @app.get("/set/<name>")
    def set_key(name: str) -> str:
        session[name] = os.getpid()
        return session.id

    @app.get("/keys")
    def keys() -> dict[str, object]:
        return {"pid": os.getpid(), "session": dict(session)}

    return app


if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    print(server.server_port, flush=True)
    sys.stdout.close()
    server.serve_forever()
