"""A small app that shows Prancer's session flow.

.. code-block:: text

    pip install 'flask-prancer-session[database]'
    flask --app example_app run --debug

``/`` counts your visits with :meth:`~flask_prancer_session.ServerSession.get`
and :meth:`~flask_prancer_session.ServerSession.set`; ``/login`` stores a
username and gives the session a new id; ``/session`` shows what the session
holds; ``/logout`` ends it.

Sessions are kept in SQLite in the app's instance folder. To use another
config, point ``PRANCER_SESSION_CONFIG`` at a YAML or TOML file with a
top-level ``PRANCER_SESSION`` key, such as ``prancer_session.example.yml``
beside this module (YAML needs the ``yaml`` extra, TOML Python 3.11).

The cookie is signed with ``EXAMPLE_SECRET_KEY`` if it is set, or else with a
random key made on the first run and kept in ``instance/secret_key``, so
sessions survive restarts.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import typing as t

from flask import abort
from flask import flash
from flask import Flask
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for

from flask_prancer_session import PrancerSession

if t.TYPE_CHECKING:
    from werkzeug import Response


def create_app(
    test_config: t.Mapping[str, t.Any] | None = None,
    *,
    instance_path: str | os.PathLike[str] | None = None,
) -> Flask:
    """Create the example app.

    :param test_config: config values applied last, over the defaults and the
        ``PRANCER_SESSION_CONFIG`` file.
    :param instance_path: where the secret key and the sessions are kept;
        Flask's default ``instance`` folder if not given.
    """
    app = Flask(__name__, instance_path=None if instance_path is None else os.fspath(instance_path))
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    app.config["PRANCER_SESSION"] = {
        "state": {"driver": "cookie", "options": {"session_key": "PSESSION"}},
        "store": {
            "driver": "database",
            "options": {"url": f"sqlite:///{app.instance_path}/sessions.db"},
        },
    }
    config_file = os.environ.get("PRANCER_SESSION_CONFIG")
    if config_file:
        _load_session_config(app, config_file)
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = os.environ.get("EXAMPLE_SECRET_KEY") or _instance_secret_key(
            app.instance_path
        )
    PrancerSession(app)

    # A minimal CSRF check so the forms are safe to copy; a real app would
    # rather use Flask-WTF, which works with these sessions unchanged.
    app.jinja_env.globals["csrf_token"] = _csrf_token
    app.before_request(_check_csrf_token)

    @app.get("/")
    def index() -> str:
        count = session.get("count", 0) + 1
        session.set("count", count)
        return render_template("index.html", count=count, username=session.get("username"))

    @app.route("/login", methods=["GET", "POST"])
    def login() -> str | Response:
        if request.method == "POST":
            username = request.form.get("username", "").strip()
            if username:
                session.set("username", username)
                # A new id on login: an id an attacker planted earlier is now worthless.
                session.regenerate()
                flash(f"Logged in as {username}.")
                return redirect(url_for("index"))
            flash("Please enter a username.")
        return render_template("login.html", username=session.get("username"))

    @app.get("/session")
    def show_session() -> str:
        return render_template("session.html", session_id=session.id, items=sorted(session.items()))

    @app.post("/logout")
    def logout() -> Response:
        session.expire()
        # Stored in a brand-new session: the old id is gone for good.
        flash("You are logged out.")
        return redirect(url_for("login"))

    return app


def _load_session_config(app: Flask, path: str) -> None:
    """Load ``PRANCER_SESSION`` from a ``.yml``, ``.yaml`` or ``.toml`` file."""
    path = os.path.abspath(path)  # from_file would read it relative to the package.
    if path.endswith((".yml", ".yaml")):
        import yaml

        app.config.from_file(path, load=yaml.safe_load)
    elif path.endswith(".toml"):
        import tomllib

        app.config.from_file(path, load=tomllib.load, text=False)
    else:
        raise RuntimeError(f"PRANCER_SESSION_CONFIG must name a .yml or .toml file, not {path!r}.")


def _instance_secret_key(instance_path: str) -> str:
    """Return the key kept in ``instance_path/secret_key``, making it on first use."""
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        # Written aside (mkstemp makes it 0600) and linked into place, so two
        # processes starting at once agree on one key and none reads half of it.
        fd, temp = tempfile.mkstemp(dir=instance_path)
        try:
            with open(fd, "w", encoding="ascii") as file:
                file.write(secrets.token_urlsafe(32))
            try:
                os.link(temp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temp)
    with open(path, encoding="ascii") as file:
        return file.read().strip()


def _csrf_token() -> str:
    token = session.get("csrf_token")
    if token is None:
        token = secrets.token_urlsafe(32)
        session.set("csrf_token", token)
    return t.cast(str, token)


def _check_csrf_token() -> None:
    if request.method == "POST":
        expected = session.get("csrf_token")
        given = request.form.get("csrf_token", "")
        if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
            abort(400, "The form is out of date; reload the page and try again.")
