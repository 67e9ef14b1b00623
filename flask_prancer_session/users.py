"""What binds a session to a user, for "log out everywhere" and the devices
page: :meth:`~UserBinding.bind_user` and the session's harmless name."""

from __future__ import annotations

import typing as t

from .changes import USER_KEY
from .devices import DEVICE_KEY
from .ids import store_key

#: The longest user id :meth:`UserBinding.bind_user` takes (what SQL stores index).
MAX_USER_ID_LENGTH = 255
#: How many hex digits of the store key make a :attr:`UserBinding.fingerprint`.
FINGERPRINT_LENGTH = 12


class UserBinding:
    """The user binding of :class:`.ServerSession`, which this is mixed into."""

    if t.TYPE_CHECKING:

        @property
        def id(self) -> str: ...

        def _put(self, key: str, value: t.Any, *, private: bool, binding: bool = False) -> None: ...
        def pop(self, key: str, default: t.Any = None) -> t.Any: ...
        def get(self, key: str, default: t.Any = None) -> t.Any: ...

    def bind_user(self, user_id: str | int) -> None:
        """Bind the session to a user, so that
        :meth:`.PrancerSession.end_user_sessions` can end it with the user's
        other sessions ("log out everywhere").

        :param user_id: the user's id, as a string or an int.
        """
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int)) or user_id == "":
            raise TypeError(f"A user id must be a non-empty string or an int, not {user_id!r}.")
        if len(str(user_id)) > MAX_USER_ID_LENGTH:
            raise ValueError(f"A user id may have at most {MAX_USER_ID_LENGTH} characters.")
        self._put(USER_KEY, str(user_id), private=True, binding=True)

    def unbind_user(self) -> None:
        """Undo :meth:`bind_user`, at logout say."""
        self.pop(USER_KEY, None)
        self.pop(DEVICE_KEY, None)

    @property
    def user_id(self) -> str | None:
        """The user :meth:`bind_user` bound the session to, or ``None``."""
        value = self.get(USER_KEY)
        return value if isinstance(value, str) else None

    @property
    def fingerprint(self) -> str:
        """A short, harmless name for the session, to show people instead of
        its id: the id is the visitor's credential, this cannot be turned back
        into it. :meth:`.PrancerSession.user_sessions` uses the same names."""
        return store_key(self.id)[:FINGERPRINT_LENGTH]
