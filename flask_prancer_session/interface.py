"""The session interface: the one place where state meets store."""

from __future__ import annotations

import dataclasses
import logging
import typing as t
from datetime import datetime
from datetime import timezone

from flask import after_this_request
from flask import has_request_context
from flask import request
from flask.sessions import SessionInterface

from .changes import ChangeSet
from .changes import Record
from .changes import USER_KEY
from .devices import Device
from .devices import DEVICE_KEY
from .devices import DeviceTracking
from .errors import SessionStoreError
from .ids import store_key
from .lifetime import Lifetime
from .lifetime import LIFETIME_KEYS
from .serializer import dumps_value
from .serializer import make_serializer
from .serializer import Serializer
from .session import ServerSession
from .state.base import StateDriver
from .store.base import StoreDriver

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response
    from flask.sessions import SessionMixin

    from .encryption import Encryptor

logger = logging.getLogger(__name__)


class Migrator(t.Protocol):
    """Reads sessions that another session library stored, to move them over."""

    def read(
        self, app: Flask, request: Request
    ) -> tuple[dict[str, t.Any], t.Callable[[Response], None]] | None:
        """Return the data of the visitor's old session and a function that
        deletes the old session and its cookie (called with the response once
        the data is stored under a new id), or ``None`` if there is none."""


class PrancerSessionInterface(SessionInterface):
    """Open a session from the id the state driver finds and the data the
    store holds, and save what the request changed.

    Installed as :attr:`flask.Flask.session_interface` by
    :meth:`.PrancerSession.init_app`.

    :param state: carries the session id.
    :param store: keeps the session data.
    :param serializer: turns values into strings; exact tagged JSON by default.
    :param encryptor: seals values before they reach the store.
    :param migrator: reads the session of a visitor who arrives without our
        cookie from where another session library kept it, such as
        :class:`~flask_prancer_session.migration.FlaskSessionMigrator`.
    """

    session_class = ServerSession

    def __init__(
        self,
        state: StateDriver,
        store: StoreDriver,
        serializer: Serializer | None = None,
        migrator: Migrator | None = None,
        encryptor: Encryptor | None = None,
        on_store_error: t.Literal["raise", "anonymous"] = "raise",
        devices: DeviceTracking | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.serializer: Serializer = serializer or make_serializer()
        self.migrator = migrator
        self.encryptor = encryptor
        #: The lifetime rules of the store's sessions.
        self.lifetimes = Lifetime(store)
        #: What a request does while the store is down: raise
        #: :class:`.SessionStoreError` at the first use of the session, or go on
        #: with an empty session that is not saved (``"anonymous"``).
        self.on_store_error = on_store_error
        #: How sessions bound to a user describe their device, or ``None``.
        self.devices = devices
        #: Whether the store failed and has not answered since, so that an
        #: outage is logged once, not on every request.
        self._outage = False

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        """Return the visitor's session, or a new empty one with a new id.

        Nothing is read from the store yet: the session loads itself when the
        request first uses it, and an id the store does not know is replaced
        by a new one then. If the store cannot be read, that first use raises
        :class:`.SessionStoreError` instead of handing out a fresh session that
        would replace the visitor's real one.
        """
        # Without a migrator, whether the request carries an intact id is
        # only worked out if the view uses the session.
        session_id = (
            self.state.extract(app, request)
            if self.migrator is not None
            else self.state.extract_lazily(app, request)
        )
        session = self.session_class(
            self.serializer,
            self.load,
            self.lifetimes,
            session_id,
            anonymous_on_error=self.on_store_error == "anonymous",
            watch_copies=app.debug or app.testing,
        )
        if session_id is not None and has_request_context():
            # Runs before the app's after_request functions.
            after_this_request(session.view_finished)
        elif session_id is None and self.migrator is not None:
            try:
                migrated = self.migrator.read(app, request)
            except SessionStoreError as error:
                # As with our own store: the views that use the session fail.
                session.unavailable(error)
                if has_request_context():
                    after_this_request(session.view_finished)
                return session
            if migrated is not None:
                data, finish = migrated
                for key, value in data.items():
                    try:
                        session[key] = value
                    except TypeError as error:
                        # Stored by the other library, refused by ours: the
                        # rest of the session moves over without it.
                        logger.warning("Not moving a session value over: %s", error)
                session.on_saved.append(finish)
        return session

    def load(self, session_id: str) -> Record | None:
        """Return what the store holds for ``session_id``, with its values opened."""
        try:
            record = self.store.fetch(store_key(session_id))
        except SessionStoreError as error:
            self._note_outage(error)
            raise
        if self._outage:
            self._outage = False
            logger.warning("The session store answers again.")
        if record is None or self.encryptor is None:
            return record
        return Record(self.open_values(record.data), record.created_at, record.expires_at)

    def with_device(self, record: Record) -> Record:
        """Return ``record`` (as a store lists it) with its :attr:`.Record.device`."""
        value = record.data.get(DEVICE_KEY)
        if value is None:
            return record
        opened = self.open_values({DEVICE_KEY: value})[DEVICE_KEY]
        try:
            device = Device.from_stored(self.serializer.loads(opened))
        except Exception:
            device = None  # undecodable: no device to show
        return dataclasses.replace(record, device=device)

    def _note_outage(self, error: SessionStoreError) -> None:
        """Log the first failure of an outage, when requests go on without
        their sessions; with ``"raise"``, Flask logs each failed request."""
        if self.on_store_error == "anonymous" and not self._outage:
            self._outage = True
            logger.error(
                "The session store cannot be reached (%s): requests go on with empty"
                " sessions, and changes to sessions are dropped, until it answers again.",
                error,
            )

    def open_values(self, data: t.Mapping[str, str]) -> dict[str, str]:
        """Return the stored values ``data`` opened, if values are encrypted.

        A value that is not sealed by a configured key is logged and replaced
        by one that cannot be decoded, so the session drops it when read.
        """
        encryptor = self.encryptor
        if encryptor is None:
            return dict(data)
        opened = {}
        for name, value in data.items():
            if name == USER_KEY:
                opened[name] = value
                continue
            try:
                opened[name] = encryptor.open(value, name)
            except ValueError as error:
                logger.warning("Dropping session key %r: %s.", name, error)
                opened[name] = ""
        return opened

    def seal_values(self, data: t.Mapping[str, str]) -> dict[str, str]:
        """Return the serialised values ``data`` sealed for the store, if
        values are encrypted. The user binding stays readable for the store's
        index."""
        encryptor = self.encryptor
        if encryptor is None:
            return dict(data)
        return {
            name: value if name == USER_KEY else encryptor.seal(value, name)
            for name, value in data.items()
        }

    def lifetime(
        self, session: ServerSession, app: Flask | None = None
    ) -> tuple[float | None, bool]:
        """Return the session's idle timeout (``None`` for the store's
        ``expiration_timeout``) and whether its cookie outlives the browser.

        A lifetime from :meth:`.ServerSession.set_expiry` comes first, then
        ``permanent_timeout`` or ``PERMANENT_SESSION_LIFETIME`` for a permanent
        session.
        """
        return self.lifetimes.timeout(session.expiry_override(), session.permanent, app)

    def expiry(self, session: ServerSession, app: Flask | None = None) -> float:
        """Return when ``session`` expires if this request is its last use."""
        times = session.stored_times
        return self.lifetimes.expires_at(
            None if times is None else times[0], session.expiry_override(), session.permanent, app
        )

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Write what the request changed to the store and set or expire the cookie.

        Nothing is done for a session the request never used, nor twice for
        one request (Flask calls this again for the error page when it fails).
        A session emptied by the request is deleted with its cookie unless
        another request stored a key meanwhile; a session that was only read
        is touched (its expiry moved) at most once per
        :meth:`.StoreDriver.touch_due` interval.
        """
        if not isinstance(session, ServerSession) or session.saved:
            return
        session.saved = True
        if session.accessed:
            vary_on(response, self.state.vary_header)
        if not session.loaded:
            return
        for key in session.copies_changed_in_place():
            logger.warning(
                "session.get(%r) returned a copy, which this request changed in place: the"
                " session still holds the old value. Store it back with session[%r] = value"
                " or session.set(%r, value), or change session[%r] itself, which Flask's"
                " own session hands out.",
                key,
                key,
                key,
                key,
            )
        if session.degraded:
            if session.ended:
                # A logout: the stored session cannot be deleted, but the
                # browser can at least forget its id.
                logger.warning(
                    "A session ended while its store is down could not be deleted; its"
                    " cookie is expired, and the stored copy lives until it expires."
                )
                self.state.expire(app, response)
            elif session.modified:
                logger.debug("Dropping a change to a session while its store is down.")
            return
        if self.on_store_error == "raise":
            self._save(app, session, response)
            return
        try:
            self._save(app, session, response)
        except SessionStoreError as error:
            # The response goes out without the change and with the
            # visitor's cookie as it was.
            self._note_outage(error)
            logger.warning("Dropped a change to a session: %s", error)

    def _save(self, app: Flask, session: ServerSession, response: Response) -> None:
        origin = session.origin
        if origin is None:
            self._create(app, session, response)
        elif session.ended:
            self.store.remove(store_key(origin))
            if not self._create(app, session, response):
                self.state.expire(app, response)
        elif session.id != origin:
            self._move(app, session, origin, response)
        else:
            self._update(app, session, response)

    def _create(self, app: Flask, session: ServerSession, response: Response) -> bool:
        if not session.holds_something():
            # Nothing but flags about keeping nothing, as a before_request
            # that sets session.permanent (and Flask-Login's session
            # protection after it) gives every bot and health check.
            return False
        data = session.values_to_store()
        device = self._device(session, data)
        if device is not None:
            data[DEVICE_KEY] = device
        timeout, persistent = self.lifetime(session, app)
        created_at = self.store.clock()
        self.store.apply(
            store_key(session.id),
            ChangeSet(self.seal_values(data), created_at=created_at, timeout=timeout),
        )
        self._send(app, session, response, created_at, timeout, persistent)
        for finish in session.on_saved:
            finish(response)
        self.store.maybe_purge()
        return True

    def _update(self, app: Flask, session: ServerSession, response: Response) -> None:
        store = self.store
        times = session.stored_times
        assert times is not None  # a stored session has both
        created_at, expires_at = times
        timeout, persistent = self.lifetime(session, app)
        if not session.refreshes:
            # What is left of its lifetime: the expiry stays where it is
            # (however often the view polls), and one that passed meanwhile
            # takes the change with it.
            remaining = expires_at - store.clock()
            changes = session.changes(timeout=remaining)
            if changes and remaining > 0:
                self._apply_changes(app, session, changes, response)
            return
        refresh = persistent and app.config["SESSION_REFRESH_EACH_REQUEST"]
        changes = session.changes(timeout=timeout)
        due = not changes and store.touch_due(created_at, expires_at, timeout)
        device = self._device(session, changes.updated) if changes or due else None
        if device is not None:
            # The last-seen time rides on the write or touch made anyway.
            changes = ChangeSet(
                {**changes.updated, DEVICE_KEY: device}, changes.removed, timeout=timeout
            )
        if changes:
            if not self._apply_changes(app, session, changes, response):
                return
            expires_at = self._slide(session, created_at, timeout)
            # The expiry slid, so a persistent cookie must follow it.
            refresh = persistent or not LIFETIME_KEYS.isdisjoint(
                changes.updated.keys() | changes.removed
            )
            store.maybe_purge()
        elif due:
            expires_at = self._slide(session, created_at, timeout)
            store.touch(store_key(session.id), expires_at)
            refresh = refresh or persistent
        if refresh or self.state.needs_refresh(app, request, session.id):
            self._cookie(app, session, response, expires_at, persistent)

    def _device(self, session: ServerSession, updated: t.Mapping[str, str]) -> str | None:
        """Return the device description to write with this save, serialised,
        or ``None``: a new one when the request binds the session to a user,
        else the bound session's own with its last-seen time moved, once per
        :attr:`.DeviceTracking.last_seen_interval`."""
        devices = self.devices
        if devices is None:
            return None
        now = self.store.clock()
        if USER_KEY in updated:
            description = devices.describe(request, now)
        elif session.user_id is not None:
            seen = devices.seen(session.value_of(DEVICE_KEY), now)
            if seen is None:
                return None
            description = seen
        else:
            return None
        return dumps_value(self.serializer, DEVICE_KEY, description)

    def _apply_changes(
        self, app: Flask, session: ServerSession, changes: ChangeSet, response: Response
    ) -> bool:
        """Apply what the request changed to the stored session, and tell
        whether it is still stored."""
        if self.encryptor is not None:
            changes = dataclasses.replace(changes, updated=self.seal_values(changes.updated))
        if self.store.apply(store_key(session.id), changes):
            return True
        session.stored(None)
        # Emptied by this request: forget the cookie. Ended by another (a
        # logout, a regenerate) the cookie is left alone, since the browser
        # may hold that request's newer one by now.
        if not session:
            self.state.expire(app, response)
        return False

    def _move(self, app: Flask, session: ServerSession, origin: str, response: Response) -> None:
        """Store a regenerated session under its new id, unless another request
        ended it meanwhile: then it stays ended."""
        store = self.store
        old_key, new_key = store_key(origin), store_key(session.id)
        record = store.fetch(old_key)
        if record is not None:
            changes = session.changes()
            data = {k: v for k, v in record.data.items() if k not in changes.removed}
            updated = dict(changes.updated)
            device = self._device(session, updated)
            if device is not None:
                updated[DEVICE_KEY] = device
            data.update(self.seal_values(updated))
            if data:
                timeout, persistent = self.lifetime(session, app)
                if not session.refreshes:
                    # A new id, not a longer life.
                    timeout = max(record.expires_at - store.clock(), 0.001)
                store.apply(new_key, ChangeSet(data, created_at=record.created_at, timeout=timeout))
                if store.remove(old_key):
                    self._send(app, session, response, record.created_at, timeout, persistent)
                    return
                store.remove(new_key)  # Ended between the two steps.
            else:
                store.remove(old_key)
        session.stored(None)
        self.state.expire(app, response)

    def _send(
        self,
        app: Flask,
        session: ServerSession,
        response: Response,
        created_at: float,
        timeout: float | None,
        persistent: bool,
    ) -> None:
        expires_at = self._slide(session, created_at, timeout)
        self._cookie(app, session, response, expires_at, persistent)

    def _slide(self, session: ServerSession, created_at: float, timeout: float | None) -> float:
        """Return the session's new expiry, noted on the session."""
        expires_at = self.store.expiry_for(created_at, timeout=timeout)
        session.stored((created_at, expires_at))
        return expires_at

    def _cookie(
        self,
        app: Flask,
        session: ServerSession,
        response: Response,
        expires_at: float,
        persistent: bool,
    ) -> None:
        expires = datetime.fromtimestamp(expires_at, timezone.utc)
        self.state.finalize(app, response, session.id, expires=expires, persistent=persistent)


def vary_on(response: Response, header: str) -> None:
    """Add ``header`` to the response's ``Vary`` header.

    Most responses have no ``Vary`` yet; werkzeug's ``response.vary``, which
    parses the header into a set and writes it back, is only needed when one does.
    """
    headers = response.headers
    if headers.get("Vary") is None:
        headers["Vary"] = header
    else:
        response.vary.add(header)
