"""The session object behind :data:`flask.session`."""

from __future__ import annotations

import copy
import typing as t

from flask.sessions import SessionMixin
from werkzeug.datastructures import CallbackDict

from .changes import ChangeSet
from .errors import SessionStoreError
from .ids import new_id
from .serializer import dumps_value
from .serializer import Serializer

_MISSING: t.Any = object()


class ServerSession(CallbackDict[str, t.Any], SessionMixin):
    """A session whose data lives in a store and whose id travels in the cookie.

    It is a full Flask session (a mutable mapping with ``permanent``,
    ``modified``, ``new`` and ``accessed``), so Flask-Login, Flask-WTF and
    :func:`flask.flash` work unchanged, and it adds Prancer's methods:
    :attr:`id`, :meth:`has`, :meth:`get`, :meth:`set`, :meth:`remove`,
    :meth:`expire` and :meth:`regenerate`.

    What is saved is worked out at the end of the request by comparing each
    value with what was loaded, so changes made in place
    (``session["cart"].append(item)``) are saved without setting
    :attr:`modified`, and only the keys this request changed are written.

    :param serializer: turns values into strings; values are checked with it
        as they are set.
    :param session_id: the id, or ``None`` to make a new one.
    :param data: the values loaded from the store.
    :param loaded: the serialised form of ``data`` as the store returned it.
    :param created_at: when the stored session was created, for a loaded one.
    :param expires_at: when the stored session expires, for a loaded one.
    """

    def __init__(
        self,
        serializer: Serializer,
        session_id: str | None = None,
        data: t.Mapping[str, t.Any] | None = None,
        *,
        loaded: t.Mapping[str, str] | None = None,
        created_at: float | None = None,
        expires_at: float | None = None,
    ) -> None:
        def on_update(self: ServerSession) -> None:
            self.modified = True

        super().__init__(data, on_update)
        self._serializer = serializer
        self._id = session_id or new_id()
        self._loaded: dict[str, str] = dict(loaded or {})
        #: ``True`` for a session that is not in the store yet.
        self.new = created_at is None
        #: When the stored session was created, ``None`` for a new one.
        self.created_at = created_at
        #: When the stored session expires unless used, ``None`` for a new one.
        self.expires_at = expires_at
        #: Ids of stored sessions to delete when the request ends.
        self.discarded_ids: list[str] = []
        self.modified = False

    @property
    def id(self) -> str:
        """The session's id, the same for every request of one visitor until
        :meth:`expire` or :meth:`regenerate` replaces it."""
        return self._id

    def has(self, key: str) -> bool:
        """Tell whether the session holds ``key``."""
        return key in self

    def get(self, key: str, default: t.Any = None) -> t.Any:
        """Return a copy of the value of ``key``, or ``default``.

        Mutable values are deep copies, so changing one does not change the
        session; use :meth:`set` to store it again. ``session[key]`` returns the
        value itself, for code that changes it in place.
        """
        value = super().get(key, _MISSING)
        if value is _MISSING:
            return default
        return copy.deepcopy(value)

    def set(self, key: str, value: t.Any) -> t.Any:
        """Store a deep copy of ``value`` under ``key`` and return the previous
        value, or ``None``.

        :raise TypeError: naming the key, if the value cannot be serialised.
        """
        previous = super().get(key)
        self[key] = copy.deepcopy(value)
        return previous

    def remove(self, key: str) -> t.Any:
        """Delete ``key`` and return its value, or ``None`` if it was not set."""
        return self.pop(key, None)

    def expire(self) -> None:
        """End the session: its data is cleared, the stored copy is deleted and
        the cookie is expired in the response.

        Values stored after this go into a brand-new session with a new id; the
        old id is never valid again.
        """
        self._discard_id()
        dict.clear(self)
        self._loaded = {}
        self.new = True
        self.created_at = None
        self.expires_at = None
        self.modified = True

    def regenerate(self) -> None:
        """Give the session a new id and keep its data; the old id is deleted
        from the store and never valid again.

        Call it when the visitor logs in (or their privileges change), so an id
        planted before login by an attacker (session fixation) is worthless.
        """
        self._discard_id()
        # Written in full under the new id; the creation time is kept so
        # regenerating cannot extend an absolute lifetime.
        self._loaded = {}
        self.new = True
        self.modified = True

    def _discard_id(self) -> None:
        if not self.new:
            self.discarded_ids.append(self._id)
        self._id = new_id()

    def __setitem__(self, key: str, value: t.Any) -> None:
        # Serialise now so a bad value fails at the line that stored it.
        dumps_value(self._serializer, key, value)
        super().__setitem__(key, value)

    def setdefault(self, key: str, default: t.Any = None) -> t.Any:
        if key not in self:
            dumps_value(self._serializer, key, default)
        return super().setdefault(key, default)

    def update(self, *args: t.Any, **kwargs: t.Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def changes(self, created_at: float | None = None) -> ChangeSet:
        """Return what this request changed relative to what was loaded.

        :param created_at: passed on to :attr:`.ChangeSet.created_at` for a
            session that the changes may create.
        :raise TypeError: naming the key, if a value cannot be serialised.
        """
        updated = {}
        for key, value in dict.items(self):
            encoded = dumps_value(self._serializer, key, value)
            if self._loaded.get(key) != encoded:
                updated[key] = encoded
        removed = frozenset(self._loaded.keys() - dict.keys(self))
        return ChangeSet(updated, removed, created_at)


class UnavailableSession(SessionMixin):
    """Stands in for the session when the store could not be read.

    Every use raises :class:`~flask_prancer_session.errors.SessionStoreError`,
    so a view that needs the session fails loudly (and an
    ``errorhandler(SessionStoreError)`` can answer it), while views that never
    touch the session, such as health checks, still work. Nothing is saved.

    :param error: the failure that made the session unavailable.
    """

    def __init__(self, error: SessionStoreError) -> None:
        self.error = error

    def _fail(self, *args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise SessionStoreError(str(self.error), self.error.original_error) from self.error

    __getitem__ = __setitem__ = __delitem__ = __iter__ = __len__ = _fail
    has = get = set = remove = expire = regenerate = _fail

    @property
    def id(self) -> str:
        self._fail()
