"""The session object behind :data:`flask.session`."""

from __future__ import annotations

import copy
import logging
import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask import session as flask_session
from flask.sessions import SessionMixin

from .changes import ChangeSet
from .changes import USER_KEY
from .devices import DEVICE_KEY
from .errors import SessionStoreError
from .ids import new_id
from .lifetime import EXPIRY_KEY
from .lifetime import expiry_override_for
from .lifetime import LIFETIME_KEYS
from .serializer import check_key
from .serializer import dumps_value
from .serializer import Serializer
from .users import UserBinding

if t.TYPE_CHECKING:
    from flask import Response

    from .changes import Record
    from .lifetime import Lifetime

logger = logging.getLogger(__name__)

#: Values that cannot be changed in place: returned as they are by :meth:`get`,
#: and their serialised form at :meth:`set` time is still right at save time.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})

#: The keys only :meth:`ServerSession.bind_user` (and the interface) write.
_BINDING_KEYS = frozenset({USER_KEY, DEVICE_KEY})

#: Keys that alone give a session nothing worth storing: how long to keep
#: it, and Flask-Login's freshness flag, which Flask-Login's session
#: protection writes for visitors who never logged in.
_NOTHING_KEYS = LIFETIME_KEYS | {"_fresh"}


class ServerSession(UserBinding, SessionMixin):
    """A session whose data lives in a store and whose id travels in the cookie.

    It is a full Flask session (a mutable mapping with ``permanent``,
    ``modified``, ``new`` and ``accessed``), so Flask-Login, Flask-WTF and
    :func:`flask.flash` work unchanged, and it adds Prancer's methods:
    :attr:`id`, :meth:`has`, :meth:`get`, :meth:`set`, :meth:`remove`,
    :meth:`expire`, :meth:`regenerate` and :meth:`set_expiry`.

    The stored session is read when the request first uses the session, so a
    view that never touches it costs no store round trip. Values are decoded
    when first read. What is saved is worked out at the end of the request by
    comparing each value the request read or set with what was loaded, so
    changes made in place (``session["cart"].append(item)``) are saved without
    setting :attr:`modified`, and only the keys this request changed are
    written, whichever reference to the session they were made through.

    :param serializer: turns values into the strings the store keeps.
    :param load: returns what the store holds under a session id, values
        opened, or ``None``; raises :class:`.SessionStoreError`.
    :param lifetime: the lifetime rules of the store, for :attr:`expires_at`.
    :param session_id: the id the visitor's cookie carries, ``None`` for a
        new session, or a function returning either, called when the session
        is first used (so a view that never uses it pays for no signature
        check).
    :param anonymous_on_error: when the store cannot be read, go on with an
        empty session that is never saved (:attr:`degraded`) instead of
        raising :class:`.SessionStoreError` at its first use.
    :param watch_copies: note the copies :meth:`get` hands out, for
        :meth:`copies_changed_in_place`.
    """

    def __init__(
        self,
        serializer: Serializer,
        load: t.Callable[[str], Record | None],
        lifetime: Lifetime,
        session_id: str | t.Callable[[], str | None] | None = None,
        *,
        anonymous_on_error: bool = False,
        watch_copies: bool = False,
    ) -> None:
        self._serializer = serializer
        self._loader = load
        self._lifetime = lifetime
        #: Stored under :attr:`id` as the request began: the id, or ``None``.
        self._origin: str | None = None
        self._resolve = session_id if callable(session_id) else None
        self._id = "" if callable(session_id) else session_id or new_id()
        self._pending = session_id is not None
        self._error: SessionStoreError | None = None
        self._error_raised = False
        self._anonymous_on_error = anonymous_on_error
        #: ``True`` for a session that stands in, empty, for one the store
        #: could not read: it is never saved, and the visitor keeps their id.
        self.degraded = False
        #: With ``watch_copies`` (debug and testing), the mutable copies
        #: :meth:`get` handed out, as ``(key, copy, serialised copy)``.
        self._handed_copies: list[tuple[str, t.Any, str]] | None = [] if watch_copies else None
        #: The stored values, serialised, as loaded.
        self._raw: dict[str, str] = {}
        #: The current values; those not in :attr:`_decoded` are still serialised.
        self._data: dict[str, t.Any] = {}
        self._decoded: set[str] = set()
        #: The keys this request set or handed out by reference, with their
        #: serialised form where it is known to be current.
        self._encoded: dict[str, str | None] = {}
        self._created: float | None = None
        self._expires: float | None = None
        self._ended = False
        self._view_finished = False
        #: Set by the interface once it saved the session, so a failed save
        #: is not attempted again for the error page.
        self.saved = False
        #: Called with the response once the session is stored under a new id.
        self.on_saved: list[t.Callable[[Response], None]] = []
        self.accessed = False
        self.modified = False
        #: Whether saving the session moves its idle expiry and refreshes its
        #: cookie; see :meth:`no_refresh`.
        self.refreshes = True

    def _load(self) -> None:
        """Read the stored session the first time the request needs it."""
        self.accessed = True
        if self._pending:
            self._pending = False
            if self._resolve is not None:
                resolved, self._resolve = self._resolve(), None
                self._id = resolved or new_id()  # a forged id gets a fresh session
                if resolved is None:
                    return
            try:
                record = self._loader(self._id)
            except SessionStoreError as error:
                self.unavailable(error)
            else:
                if record is None:
                    self._id = new_id()  # An unknown id is never adopted.
                else:
                    self._origin = self._id
                    self._raw = record.data
                    self._data = dict(record.data)
                    self._created = record.created_at
                    self._expires = record.expires_at
        if self._error is not None:
            self._fail()

    def _fail(self) -> None:
        """Raise the store failure the first time the view uses the session.

        After that, and in functions that run after the view (such as
        Flask-Login's ``after_request``), the session reads as empty, so an
        error handler can answer and hooks need not fail again; writes in the
        view still raise, so nothing is silently lost.
        """
        error = self._error
        assert error is not None
        if self._error_raised or self._view_finished:
            return
        self._error_raised = True
        # Chained as the store's own error is: to the backend's exception.
        raise SessionStoreError(str(error), error.original_error) from (
            error.original_error or error
        )

    def unavailable(self, error: SessionStoreError) -> None:
        """Make the session fail as if its store could not be read, with
        ``error``, or stand in empty for it if the app chose so."""
        if self._anonymous_on_error:
            self.degraded = True
        else:
            self._error = error

    def view_finished(self, response: Response) -> Response:
        """Note that the view has returned; called before ``after_request``
        functions."""
        self._view_finished = True
        return response

    def _writable(self) -> None:
        """Allow a change, or raise if the store could not be read.

        In functions that run after the view, a change to a session whose store
        is down is logged and dropped instead: it could not be saved anyway,
        and raising would turn the error page into a second failure.
        """
        self._load()
        if self._error is not None and not self._view_finished:
            raise SessionStoreError(
                "The session cannot be changed: the store could not be read.",
                self._error.original_error,
            ) from (self._error.original_error or self._error)
        if self._error is not None:
            logger.warning("Dropping a change to a session whose store could not be read.")
        self.modified = True

    def _value(self, key: str) -> t.Any:
        """Return the value of ``key``, decoding it if needed.

        :raise KeyError: if there is no such key, or its stored value cannot be
            decoded (it is then logged and deleted at save).
        """
        value = self._data[key]
        if key not in self._decoded:
            try:
                value = self._serializer.loads(value)
            except Exception:
                logger.warning("Dropping session key %r: its stored value cannot be decoded.", key)
                del self._data[key]
                raise KeyError(key) from None
            self._data[key] = value
            self._decoded.add(key)
        return value

    def _decodable(self, key: str) -> bool:
        """Tell whether the session holds ``key`` with a value that can be
        decoded; one that cannot is logged and dropped, so every way of
        looking at the session agrees that it is absent."""
        if key not in self._data:
            return False
        try:
            self._value(key)
        except KeyError:
            return False
        return True

    def _decode_all(self) -> None:
        for key in [key for key in self._data if key not in self._decoded]:
            self._decodable(key)

    def _put(self, key: str, value: t.Any, *, private: bool, binding: bool = False) -> None:
        check_key(key)
        if key in _BINDING_KEYS and not binding:
            # The stores index sessions by the user key's value, which must be
            # what bind_user writes; the device goes with it.
            raise TypeError(f"Use bind_user() to bind the session to a user, not {key!r}.")
        # Serialised now so a bad value fails at the line that stored it.
        encoded = dumps_value(self._serializer, key, value)
        self._writable()
        self._data[key] = value
        self._decoded.add(key)
        # The form is still right at save time unless someone else holds the
        # value and can change it in place.
        self._encoded[key] = encoded if private or type(value) in _IMMUTABLE else None

    # The mapping protocol; every other mapping method is built on these.

    def __getitem__(self, key: str) -> t.Any:
        self._load()
        value = self._value(key)
        if type(value) not in _IMMUTABLE:
            self._encoded[key] = None  # The caller may change it in place.
        return value

    def __setitem__(self, key: str, value: t.Any) -> None:
        self._put(key, value, private=False)

    def __delitem__(self, key: str) -> None:
        self._writable()
        del self._data[key]
        self._decoded.discard(key)
        self._encoded.pop(key, None)

    def __iter__(self) -> t.Iterator[str]:
        self._load()
        self._decode_all()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._load()
        self._decode_all()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._load()
        return isinstance(key, str) and self._decodable(key)

    def __repr__(self) -> str:
        if self._pending or self._error is not None:
            return f"<{type(self).__name__} (not loaded)>"
        return f"<{type(self).__name__} {dict(self)!r}>"

    def clear(self) -> None:
        self._writable()
        self._data.clear()
        self._decoded.clear()
        self._encoded.clear()

    def copy(self) -> dict[str, t.Any]:
        """Return a shallow copy of the data as a :class:`dict`."""
        return dict(self)

    # Prancer's API.

    @property
    def id(self) -> str:
        """The session's id, the same for every request of one visitor until
        :meth:`expire` or :meth:`regenerate` replaces it."""
        self._load()
        return self._id

    @property
    def new(self) -> bool:  # type: ignore[override]
        """``True`` for a session that is not in the store (yet) under :attr:`id`."""
        self._load()
        return self._origin is None or self._id != self._origin

    @property
    def created_at(self) -> datetime | None:
        """When the stored session was created, or ``None`` for a new one."""
        self._load()
        return None if self._created is None else _utc(self._created)

    @property
    def expires_at(self) -> datetime | None:
        """When the session expires if it is not used again after this request,
        or ``None`` for a session that holds nothing and so is not stored.

        The store may keep an expiry up to a minute earlier when a request
        that only read the session skips moving it (see
        :meth:`.StoreDriver.touch_due`)."""
        self._load()
        if not self._data:
            return None
        times = self.stored_times
        expires_at = self._lifetime.expires_at(
            None if times is None else times[0], self.expiry_override(), self.permanent
        )
        return _utc(expires_at)

    @property
    def permanent(self) -> bool:
        """Flask's flag: the session outlives the browser session, for
        ``PERMANENT_SESSION_LIFETIME`` (see :meth:`set_expiry` for more)."""
        self._load()
        return self._decodable("_permanent") and bool(self._data["_permanent"])

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self["_permanent"] = bool(value)

    def has(self, key: str) -> bool:
        """Tell whether the session holds ``key``."""
        return key in self

    def get(self, key: str, default: t.Any = None) -> t.Any:
        """Return a copy of the value of ``key``, or ``default``.

        Mutable values are deep copies, so changing one does not change the
        session; use :meth:`set` to store it again. ``session[key]`` returns the
        value itself, for code that changes it in place.
        """
        value = self._copy_of(key, default)
        if self._handed_copies is not None and type(value) not in _IMMUTABLE:
            self._handed_copies.append((key, value, self._serializer.dumps(value)))
        return value

    def _copy_of(self, key: str, default: t.Any) -> t.Any:
        self._load()
        try:
            value = self._value(key)
        except KeyError:
            return default
        return value if type(value) in _IMMUTABLE else copy.deepcopy(value)

    def value_of(self, key: str) -> t.Any:
        """Return the value of ``key`` or ``None``, for the interface: not a
        copy, and not noted as handed out."""
        self._load()
        return self._value(key) if self._decodable(key) else None

    def copies_changed_in_place(self) -> list[str]:
        """Return the keys whose copy, as :meth:`get` returned it, the request
        changed without storing it back: a change that is lost, where Flask's
        own session would have kept it. Only watched in debug and testing."""
        lost = []
        for key, value, handed in self._handed_copies or ():
            try:
                now = self._serializer.dumps(value)
            except (TypeError, ValueError):
                continue
            if now != handed and (key not in self._data or self._serialised(key) != now):
                lost.append(key)
        return lost

    def set(self, key: str, value: t.Any) -> t.Any:
        """Store a deep copy of ``value`` under ``key`` and return the previous
        value, or ``None``.

        :raise TypeError: naming the key, if the key is not a string or the
            value cannot be stored.
        """
        previous = self._copy_of(key, None)
        self._put(key, copy.deepcopy(value), private=True)
        return previous

    def remove(self, key: str) -> t.Any:
        """Delete ``key`` and return its value, or ``None`` if it was not set."""
        self._load()
        try:
            value = self._value(key)
        except KeyError:
            return None
        del self[key]
        return value

    def expire(self) -> None:
        """End the session: its data is cleared, the stored copy is deleted and
        the cookie is expired in the response.

        Values stored after this go into a brand-new session with a new id; the
        old id is never valid again.
        """
        self.clear()
        self._ended = True
        self._id = new_id()
        self._created = None
        self._expires = None

    def regenerate(self) -> None:
        """Give the session a new id and keep its data; the old id is deleted
        from the store and never valid again.

        Call it when the visitor logs in (or their privileges change), so an id
        planted before login by an attacker (session fixation) is worthless.
        If another request ends the session meanwhile (a logout), the session
        stays ended: its data is not stored under the new id.
        """
        self._writable()
        self._id = new_id()

    def no_refresh(self) -> None:
        """Keep this request from extending the session's idle expiry or
        refreshing its cookie, even if it changes the session: for a page
        that polls, which must not keep an idle visitor logged in forever.
        The :func:`~flask_prancer_session.no_refresh` decorator calls it for a view.
        """
        self.refreshes = False

    def set_expiry(self, value: float | timedelta | datetime | None) -> None:
        """Give this session its own lifetime, as Django's ``set_expiry`` does.

        :param value: seconds or a :class:`~datetime.timedelta` of inactivity
            after which it expires (sliding); a :class:`~datetime.datetime` at
            which it expires however it is used (naive means UTC); or ``None``
            to go back to the app's lifetime (``permanent`` or not). Lifetimes
            over ten years count as ten years. A session
            with its own lifetime gets a cookie that expires with it, and the
            store's ``absolute_timeout`` still caps it.
        :raise ValueError: for a duration that is not positive.
        """
        override = expiry_override_for(value)
        if override is None:
            self.pop(EXPIRY_KEY, None)
        else:
            self[EXPIRY_KEY] = override

    # For the session interface.

    def holds_something(self) -> bool:
        """Tell whether the session holds more than flags about itself (its
        lifetime, Flask-Login's freshness): a new session is stored, and
        bound to a user by a request loader, only then."""
        self._load()
        return not _NOTHING_KEYS.issuperset(self._data)

    @property
    def loaded(self) -> bool:
        """Tell whether the request used the session and its store could be read."""
        return not self._pending and self._error is None and self.accessed

    @property
    def origin(self) -> str | None:
        """The id the session was stored under when the request began, if any."""
        return self._origin

    @property
    def ended(self) -> bool:
        """``True`` once :meth:`expire` was called."""
        return self._ended

    @property
    def stored_times(self) -> tuple[float, float] | None:
        """``(created_at, expires_at)`` as the store last reported them."""
        if self._created is None or self._expires is None:
            return None
        return self._created, self._expires

    def stored(self, times: tuple[float, float] | None) -> None:
        """Note ``(created_at, expires_at)`` of what the store now holds, or
        ``None`` for nothing, after the interface saved the session."""
        self._created, self._expires = (None, None) if times is None else times

    def expiry_override(self) -> dict[str, float] | None:
        """The lifetime :meth:`set_expiry` gave this session, if any."""
        if not self._decodable(EXPIRY_KEY):
            return None
        value = self._data[EXPIRY_KEY]
        return value if isinstance(value, dict) else None

    def values_to_store(self) -> dict[str, str]:
        """Return every value, serialised, for a session written in full."""
        return {key: self._serialised(key) for key in self._data}

    def _serialised(self, key: str) -> str:
        if key in self._encoded:
            return self._encoded[key] or dumps_value(self._serializer, key, self._data[key])
        return self._raw[key]  # Neither set nor handed out: unchanged since loaded.

    def changes(self, timeout: float | None = None) -> ChangeSet:
        """Return what this request changed relative to what was loaded.

        Only values the request set or handed out by reference are
        serialised again: no other value can have changed.

        :param timeout: passed on to :attr:`.ChangeSet.timeout`.
        :raise TypeError: naming the key, if a value cannot be serialised.
        """
        if not self._encoded and len(self._data) == len(self._raw):
            return _NO_CHANGES  # nothing set, handed out or deleted
        updated = {}
        for key in self._encoded:
            encoded = self._serialised(key)
            if self._raw.get(key) != encoded:
                updated[key] = encoded
        removed = frozenset(self._raw.keys() - self._data.keys())
        return ChangeSet(updated, removed, timeout=timeout)


_NO_CHANGES = ChangeSet()


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


#: :data:`flask.session`, typed as the :class:`ServerSession` it is once
#: :class:`.PrancerSession` is set up, so type checkers and editors know
#: :attr:`~ServerSession.id`, :meth:`~ServerSession.set` and the rest.
session: ServerSession = t.cast(ServerSession, flask_session)
