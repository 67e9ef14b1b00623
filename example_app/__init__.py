"""A small app that shows Prancer's session flow.

.. code-block:: text

    pip install 'flask-prancer-session[database]'
    flask --app example_app run --debug

``/`` counts your visits with :meth:`~flask_prancer_session.ServerSession.get`
and :meth:`~flask_prancer_session.ServerSession.set`; ``/login`` stores a
username, binds the session to that user and gives it a new id; ``/session``
shows what the session holds; ``/devices`` lists the user's sessions, with the
browser, system and network each signed in from, and ends them one by one or
all at once; ``/logout`` ends this one.

``/api/...`` serves the same as JSON, for a client that carries its session in
the ``X-Session-Token`` header: run the app with the header state
(``PRANCER_SESSION_CONFIG`` pointing at ``prancer_session.header.example.yml``)
and drive it with ``python -m example_app.api_client http://127.0.0.1:5000``.

No page ever shows the session id: it is the visitor's credential, and a page
that printed it would hand it to any script injected into the page despite
``HttpOnly``. Pages show :attr:`~flask_prancer_session.ServerSession.fingerprint`
instead.

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
import sys
import tempfile
import typing as t
from datetime import datetime
from datetime import timezone

from flask import abort
from flask import current_app
from flask import flash
from flask import Flask
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for

from flask_prancer_session import HeaderState
from flask_prancer_session import PrancerSession
from flask_prancer_session import PrancerSessionInterface
from flask_prancer_session import session

if t.TYPE_CHECKING:
    from werkzeug import Response

    from flask_prancer_session.devices import Device as DeviceInfo


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
        # The devices page shows each session's browser, system and network.
        "devices": True,
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

    @app.context_processor
    def inject_username() -> dict[str, t.Any]:
        return {"username": session.get("username")}

    @app.template_filter("when")
    def when(value: datetime | None) -> str:
        return "-" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")

    @app.get("/")
    def index() -> str:
        count = session.get("count", 0) + 1
        session.set("count", count)
        return render_template("index.html", count=count)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> str | Response:
        if request.method == "POST":
            username = request.form.get("username", "").strip()
            if username:
                session.set("username", username)
                # Listed on the user's devices page, and ended by "log out everywhere".
                session.bind_user(username)
                # A new id on login: an id an attacker planted earlier is now worthless.
                session.regenerate()
                flash(f"Logged in as {username}.")
                return redirect(url_for("index"))
            flash("Please enter a username.", "error")
        return render_template("login.html")

    @app.get("/session")
    def show_session() -> str:
        # Never the id: show the fingerprint, which cannot be turned back into it.
        return render_template(
            "session.html",
            stored=session.created_at is not None,
            fingerprint=session.fingerprint,
            created_at=session.created_at,
            expires_at=session.expires_at,
            items=sorted(session.items()),
        )

    @app.get("/devices")
    def devices() -> str | Response:
        user_id = session.user_id
        if user_id is None:
            flash("Log in to see your devices.")
            return redirect(url_for("login"))
        try:
            sessions = PrancerSession.user_sessions(user_id)
        except NotImplementedError:
            return render_template("devices.html", devices=None)
        current = session.fingerprint
        # This device first, then the newest.
        ordered = sorted(
            sessions.items(), key=lambda item: (item[0] != current, -item[1].created_at)
        )
        devices = [
            Device(
                fingerprint,
                _utc(record.created_at),
                _utc(record.expires_at),
                fingerprint == current,
                _described(record.device),
                None if record.device is None else record.device.network,
                None if record.device is None else record.device.last_seen_at,
            )
            for fingerprint, record in ordered
        ]
        return render_template("devices.html", devices=devices)

    @app.post("/devices/<string(length=12):fingerprint>/end")
    def end_device(fingerprint: str) -> Response:
        user_id = session.user_id
        if user_id is None:
            return redirect(url_for("login"))
        if fingerprint == session.fingerprint:
            return logout()
        try:
            ended = PrancerSession.end_session(fingerprint, user_id)
        except NotImplementedError:
            return redirect(url_for("devices"))  # which explains why
        if ended:
            flash(f"Ended the session {fingerprint}.")
        else:
            flash(f"The session {fingerprint} had already ended.", "error")
        return redirect(url_for("devices"))

    @app.post("/devices/end-all")
    def end_all_devices() -> Response:
        user_id = session.user_id
        if user_id is None:
            return redirect(url_for("login"))
        try:
            ended = PrancerSession.end_user_sessions(user_id)
        except NotImplementedError:
            return redirect(url_for("devices"))
        # This session was among them; expire() also drops the copy this
        # request holds, so the response expires the cookie.
        session.expire()
        flash(f"Logged out everywhere: {ended} session{'' if ended == 1 else 's'} ended.")
        return redirect(url_for("login"))

    @app.post("/logout")
    def logout() -> Response:
        session.expire()
        # Stored in a brand-new session: the old id is gone for good.
        flash("You are logged out.")
        return redirect(url_for("login"))

    _add_api(app)
    return app


def _add_api(app: Flask) -> None:
    """The same flow as JSON, for clients that carry their session in a header."""

    @app.get("/api/count")
    def api_count() -> dict[str, t.Any]:
        count = session.get("count", 0) + 1
        session.set("count", count)
        return {"count": count, "user": session.user_id}

    @app.post("/api/login")
    def api_login() -> tuple[dict[str, t.Any], int] | dict[str, t.Any]:
        username = str((request.get_json(silent=True) or {}).get("username", "")).strip()
        if not username:
            return {"error": "a username is needed"}, 400
        session.set("username", username)
        session.bind_user(username)
        session.regenerate()
        return {"user": username}

    @app.get("/api/devices")
    def api_devices() -> tuple[dict[str, t.Any], int] | dict[str, t.Any]:
        user_id = session.user_id
        if user_id is None:
            return {"error": "log in first"}, 401
        sessions = PrancerSession.user_sessions(user_id)
        return {
            "devices": [
                {
                    "fingerprint": fingerprint,
                    "this_device": fingerprint == session.fingerprint,
                    "device": _described(record.device),
                    "network": None if record.device is None else record.device.network,
                }
                for fingerprint, record in sorted(sessions.items())
            ]
        }

    @app.post("/api/logout")
    def api_logout() -> dict[str, t.Any]:
        session.expire()
        return {"user": None}


class Device(t.NamedTuple):
    """One of the user's sessions, as the devices page lists it."""

    fingerprint: str
    created_at: datetime
    expires_at: datetime
    #: ``True`` for the session of the request showing the page.
    current: bool
    #: Browser and system, such as "Firefox 128 on Linux", if recorded.
    described: str | None = None
    #: The coarse network it signed in from, if recorded.
    network: str | None = None
    #: When it was last seen, if recorded.
    last_seen_at: datetime | None = None


def _described(device: DeviceInfo | None) -> str | None:
    if device is None:
        return None
    parts = [part for part in (device.browser, device.os) if part]
    return " on ".join(parts) or "Unknown device"


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _load_session_config(app: Flask, path: str) -> None:
    """Load ``PRANCER_SESSION`` from a ``.yml``, ``.yaml`` or ``.toml`` file."""
    path = os.path.abspath(path)  # from_file would read it relative to the package.
    if path.endswith((".yml", ".yaml")):
        import yaml

        app.config.from_file(path, load=yaml.safe_load)
    elif path.endswith(".toml") and sys.version_info >= (3, 11):
        import tomllib

        app.config.from_file(path, load=tomllib.load, text=False)
    elif path.endswith(".toml"):
        raise RuntimeError("A .toml PRANCER_SESSION_CONFIG needs Python 3.11 or newer.")
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
    # A session carried in a header needs no token: another site cannot make
    # the visitor's browser send the header, as it can send a cookie.
    if isinstance(current_app.session_interface, PrancerSessionInterface) and isinstance(
        current_app.session_interface.state, HeaderState
    ):
        return
    if request.method == "POST":
        expected = session.get("csrf_token")
        given = request.form.get("csrf_token", "")
        if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
            abort(400, "The form is out of date; reload the page and try again.")
