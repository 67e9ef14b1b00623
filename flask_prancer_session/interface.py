"""The session interface: the one place where state meets store."""

from __future__ import annotations

import logging
import typing as t

from flask.sessions import SessionInterface

from .errors import SessionStoreError
from .ids import store_key
from .serializer import make_serializer
from .serializer import Serializer
from .session import ServerSession
from .session import UnavailableSession
from .state.base import StateDriver
from .store.base import StoreDriver

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response
    from flask.sessions import SessionMixin

logger = logging.getLogger(__name__)


class PrancerSessionInterface(SessionInterface):
    """Open a session from the id the state driver finds and the data the
    store holds, and save what the request changed.

    Installed as :attr:`flask.Flask.session_interface` by
    :meth:`.PrancerSession.init_app`.

    :param state: carries the session id.
    :param store: keeps the session data.
    :param serializer: turns values into strings; tagged JSON by default.
    """

    session_class = ServerSession

    def __init__(
        self,
        state: StateDriver,
        store: StoreDriver,
        serializer: Serializer | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.serializer: Serializer = serializer or make_serializer()

    def open_session(self, app: Flask, request: Request) -> ServerSession | UnavailableSession:
        """Return the visitor's session, or a new empty one with a new id.

        If the store cannot be read, return an :class:`.UnavailableSession`
        whose every use raises :class:`.SessionStoreError`, so the request fails
        instead of handing out a fresh session that would replace the visitor's
        real one.
        """
        session_id = self.state.extract(app, request)
        if session_id is not None:
            try:
                record = self.store.fetch(store_key(session_id))
            except SessionStoreError as error:
                return UnavailableSession(error)
            if record is not None:
                try:
                    data = {key: self.serializer.loads(value) for key, value in record.data.items()}
                except Exception:
                    logger.warning(
                        "Ignoring a stored session whose data cannot be decoded.", exc_info=True
                    )
                else:
                    return self.session_class(
                        self.serializer,
                        session_id,
                        data,
                        loaded=record.data,
                        created_at=record.created_at,
                        expires_at=record.expires_at,
                    )
        return self.session_class(self.serializer)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Write what the request changed to the store and set or expire the cookie.

        Nothing is written for a session without data, a session emptied by
        the request is deleted with its cookie, and a session that was only
        read is touched (its expiry moved) at most once per
        :meth:`.StoreDriver.touch_due` interval.
        """
        if not isinstance(session, ServerSession):
            return  # The store could not be read: there is nothing to save.
        if session.accessed:
            response.vary.add("Cookie")
        store = self.store
        key = store_key(session.id)

        if session.new:
            if session:
                created = store.clock() if session.created_at is None else session.created_at
                store.apply(key, session.changes(created))
                self.state.finalize(app, response, session.id, permanent=session.permanent)
            elif session.discarded_ids:
                self.state.expire(app, response)
        else:
            created_at, expires_at = session.created_at, session.expires_at
            assert created_at is not None and expires_at is not None  # loaded sessions have both
            changes = session.changes() if session.accessed else None
            if changes and not session:
                # Emptied (session.clear() at logout, say): gone, as Flask does.
                store.remove(key)
                self.state.expire(app, response)
            elif changes:
                store.apply(key, changes)
                self.state.finalize(app, response, session.id, permanent=session.permanent)
            elif store.touch_due(created_at, expires_at):
                store.touch(key, store.expiry_for(created_at))
                self.state.finalize(app, response, session.id, permanent=session.permanent)

        # Old ids go only after the new one is safely stored.
        for session_id in session.discarded_ids:
            store.remove(store_key(session_id))
        store.maybe_purge()
