"""The ``flask session`` commands, for operators."""

from __future__ import annotations

import itertools
import json
import sys
import typing as t
from datetime import datetime
from datetime import timezone

import click
from flask import current_app
from flask.cli import AppGroup

from .changes import ChangeSet
from .changes import USER_KEY
from .encryption import PREFIX
from .errors import SessionStoreError
from .ids import is_well_formed
from .ids import store_key

if t.TYPE_CHECKING:
    from .changes import Record
    from .interface import PrancerSessionInterface
    from .store.base import StoreDriver


class _SessionGroup(AppGroup):
    """The ``flask session`` group: a store that fails ends the command with
    its message and exit status 1, as click reports a usage error, instead of
    a traceback."""

    def invoke(self, ctx: click.Context) -> t.Any:
        try:
            return super().invoke(ctx)
        except SessionStoreError as error:
            cause = error.original_error
            detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
            raise click.ClickException(f"{error}{detail}") from error


session_cli = _SessionGroup("session", help="Manage the server-side sessions.")


def _interface() -> PrancerSessionInterface:
    return t.cast("PrancerSessionInterface", current_app.extensions["prancer_session"])


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def _scan(store: StoreDriver, label: str) -> t.Iterator[tuple[str, Record]]:
    """Yield every live session with a progress bar on stderr, or stop the
    command if the store cannot list its sessions."""
    try:
        sessions = store.scan()
        first = next(sessions, None)
    except NotImplementedError as error:
        raise click.ClickException(str(error)) from error
    if first is None:
        return
    items: t.Iterable[tuple[str, Record]] = itertools.chain([first], sessions)
    with click.progressbar(
        items,
        label=label,
        show_pos=True,
        file=sys.stderr,
    ) as bar:
        yield from bar


def _session_key(value: str) -> str:
    """Turn an id as the visitor's cookie holds it, signed or not, into its store key."""
    session_id = value if is_well_formed(value) else _interface().state.id_from(current_app, value)
    if session_id is None:
        raise click.BadParameter("not a session id issued by this app", param_hint="ID")
    return store_key(session_id)


@session_cli.command("purge")
def purge_command() -> None:
    """Delete the expired sessions from the store."""
    store = _interface().store
    removed = store.purge()
    click.echo(f"Removed {_plural(removed, 'expired session')}.")
    if store.expires_natively:
        click.echo(f"{type(store).__name__} deletes expired sessions by itself.")


@session_cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats_command(as_json: bool) -> None:
    """Count the live sessions, their total and largest size, and the oldest
    and newest."""
    store = _interface().store
    count = total = largest = 0
    oldest = newest = None
    for _, record in _scan(store, "Reading sessions"):
        size = sum(len(key) + len(value) for key, value in record.data.items())
        count += 1
        total += size
        largest = max(largest, size)
        oldest = record.created_at if oldest is None else min(oldest, record.created_at)
        newest = record.created_at if newest is None else max(newest, record.created_at)
    numbers = {
        "store": type(store).__name__,
        "sessions": count,
        "total_bytes": total,
        "largest_bytes": largest,
        "oldest_created_at": None if oldest is None else _when(oldest),
        "newest_created_at": None if newest is None else _when(newest),
    }
    if as_json:
        click.echo(json.dumps(numbers))
        return
    click.echo(f"{_plural(count, 'live session')} in {numbers['store']}")
    if count:
        click.echo(f"size: {total} bytes in all, {largest} bytes the largest")
        click.echo(f"created: the oldest at {numbers['oldest_created_at']},")
        click.echo(f"         the newest at {numbers['newest_created_at']}")


#: Session ids may start with "-": they are arguments, never options.
_ID_ARGUMENTS = {"ignore_unknown_options": True}


@session_cli.command("show", context_settings=_ID_ARGUMENTS)
@click.argument("session_id", metavar="ID")
def show_command(session_id: str) -> None:
    """Print the data of the session ID (as the visitor's cookie holds it)."""
    interface = _interface()
    record = interface.store.fetch(_session_key(session_id))
    if record is None:
        raise click.ClickException("No such session (it may have expired).")
    data = {}
    for key, value in interface.open_values(record.data).items():
        try:
            data[key] = interface.serializer.loads(value)
        except Exception:
            data[key] = f"<undecodable: {value!r}>"
    document = {
        "created_at": _when(record.created_at),
        "expires_at": _when(record.expires_at),
        "data": data,
    }
    click.echo(json.dumps(document, indent=2, default=repr, ensure_ascii=False))


@session_cli.command("delete", context_settings=_ID_ARGUMENTS)
@click.argument("session_id", metavar="[ID]", required=False)
@click.option("--user", "user_id", help="Delete every session bound to this user instead.")
def delete_command(session_id: str | None, user_id: str | None) -> None:
    """Delete the session ID, or every session of a user with --user."""
    store = _interface().store
    if (session_id is None) == (user_id is None):
        raise click.UsageError("Give either a session ID or --user, not both.")
    if user_id is not None:
        try:
            removed = store.remove_user(user_id)
        except NotImplementedError as error:
            raise click.ClickException(str(error)) from error
        click.echo(f"Deleted {_plural(removed, 'session')} of user {user_id!r}.")
        return
    assert session_id is not None
    if store.remove(_session_key(session_id)):
        click.echo("Deleted the session.")
    else:
        raise click.ClickException("No such session (it may have expired).")


@session_cli.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clear_command(yes: bool) -> None:
    """Delete every session of this application: everybody is logged out."""
    store = _interface().store
    if not yes:
        click.confirm(
            f"Delete every session in {type(store).__name__}? Everybody will be logged out",
            abort=True,
        )
    try:
        removed = store.clear()
    except NotImplementedError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"Deleted {_plural(removed, 'session')}.")


@session_cli.command("rekey")
def rekey_command() -> None:
    """Encrypt every stored session value with the first configured key.

    Run it after putting a new key first in ``PRANCER_SESSION["encryption"]``
    (then the old keys can go), or after turning encryption on, to seal the
    values stored before in the clear.
    """
    interface = _interface()
    encryptor = interface.encryptor
    if encryptor is None:
        raise click.ClickException("Encryption is not configured (PRANCER_SESSION.encryption).")
    store = interface.store
    # Expired sessions are not listed, so they are deleted first: their
    # values must not outlive the keys that sealed them either.
    store.purge()
    rewritten = 0
    for key, record in _scan(store, "Re-encrypting sessions"):
        updated, expected = {}, {}
        for name, value in record.data.items():
            if name == USER_KEY or encryptor.is_current(value):
                continue
            try:
                plain = encryptor.open(value, name)
            except ValueError:
                if value.startswith(PREFIX):
                    continue  # sealed with a key no longer configured: unreadable
                plain = value  # stored before encryption was turned on
            updated[name] = encryptor.seal(plain, name)
            expected[name] = value
        if updated or store.keeps_old_versions:
            # Without created_at, a session ended meanwhile stays ended; with
            # expected, a value changed meanwhile (a logout) keeps its change;
            # with what is left of its lifetime as the timeout, its expiry
            # stays where it is. The values sealed with an old key, or in the
            # clear, go for good, earlier versions included.
            changes = ChangeSet(
                updated,
                timeout=max(record.expires_at - store.clock(), 1.0),
                erase_old_values=True,
                expected=expected,
            )
            store.apply(key, changes)
            rewritten += bool(updated)
    click.echo(f"Re-encrypted {_plural(rewritten, 'session')}.")
