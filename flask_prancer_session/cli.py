"""The ``flask session`` commands."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

session_cli = AppGroup("session", help="Manage the server-side sessions.")


@session_cli.command("purge")
def purge_command() -> None:
    """Delete the expired sessions from the store."""
    store = current_app.extensions["prancer_session"].store
    removed = store.purge()
    click.echo(f"Removed {removed} expired session{'' if removed == 1 else 's'}.")
    if store.expires_natively:
        click.echo(f"{type(store).__name__} deletes expired sessions by itself.")
