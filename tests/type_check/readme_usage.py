"""The quick start's idioms, checked by ``mypy --strict`` in CI (never run)."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta

from flask import Flask
from flask import redirect
from werkzeug import Response

from flask_prancer_session import PrancerSession
from flask_prancer_session import session
from flask_prancer_session import SessionStoreError

app = Flask(__name__)
app.config["SECRET_KEY"] = "change-me"
app.config["PRANCER_SESSION"] = {
    "store": {"driver": "storable", "options": {"dir": f"{app.instance_path}/sessions"}},
}
PrancerSession(app)


@app.get("/")
def index() -> str:
    counter: int = session.get("counter", 0) + 1
    previous = session.set("counter", counter)
    return f"count {counter} (was {previous}) in session {session.id[:8]}"


@app.post("/login")
def login() -> Response:
    session.regenerate()
    session.set("user", "ann")
    session.permanent = True
    session.set_expiry(timedelta(days=14))
    return redirect("/")


@app.post("/logout")
def logout() -> Response:
    session.expire()
    return redirect("/")


@app.get("/about-me")
def about_me() -> dict[str, object]:
    expires: datetime | None = session.expires_at
    created: datetime | None = session.created_at
    return {
        "user": session.get("user"),
        "has cart": session.has("cart"),
        "removed": session.remove("flash"),
        "expires": None if expires is None else expires.isoformat(),
        "created": None if created is None else created.isoformat(),
    }


@app.errorhandler(SessionStoreError)
def sessions_down(error: SessionStoreError) -> tuple[str, int]:
    return "Sessions are unavailable; try again in a minute.", 503
