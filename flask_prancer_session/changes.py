"""What a request did to a session, and what a store hands back.

A store never receives a whole session to write back: it receives a
:class:`ChangeSet` and applies it onto the copy it holds *now*, atomically.
Two requests of one visitor that change different keys therefore both keep
their writes, where writing the whole session back would let the last one win.
"""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass
from dataclasses import field

if t.TYPE_CHECKING:
    from .devices import Device

#: The session key that binds a session to a user (see
#: :meth:`.ServerSession.bind_user`). Its stored value is the user id as a
#: JSON string; stores that index sessions by user read it.
USER_KEY = "_prancer_user"


@dataclass(frozen=True)
class ChangeSet:
    """The keys one request set or removed, ready to be applied by a store.

    Values are already serialised: stores keep and return them as strings and
    never need to know the serializer.
    """

    #: Keys whose value was set or changed in place, mapped to the new
    #: serialised value.
    updated: t.Mapping[str, str] = field(default_factory=dict)
    #: Keys that were removed.
    removed: frozenset[str] = frozenset()
    #: When not ``None``, the change may create the session, which then counts
    #: as created at this time (for ``absolute_timeout``). When ``None``, the
    #: change only updates a session that still exists: a session expired or
    #: removed meanwhile by another request stays gone.
    created_at: float | None = None
    #: The session's idle timeout in seconds, which moves its expiry to this
    #: long from now; ``None`` means the store's ``expiration_timeout``.
    timeout: float | None = None
    #: When true, the values replaced must not survive anywhere in the store,
    #: as after ``flask session rekey``: a store that keeps earlier versions
    #: (the storable store appends versions to a file) drops them.
    erase_old_values: bool = False
    #: Compare-and-set: a key named here is updated only if its stored value
    #: is still this one when the change is applied (in the same atomic step);
    #: otherwise that key keeps what another request wrote meanwhile. For
    #: ``flask session rekey``, which must never write back a value it read
    #: before a logout or any other change landed.
    expected: t.Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.updated or self.removed or self.created_at is not None)

    def merged_into(self, data: t.Mapping[str, str]) -> dict[str, str]:
        """Return ``data`` (a stored session's values) with these changes
        applied: the removals, then the updates that :attr:`expected` allows.

        The one definition of a change applied to a record, for stores that
        merge in Python (memory, storable, cachelib).
        """
        merged = dict(data)
        for name in self.removed:
            merged.pop(name, None)
        if not self.expected:
            merged.update(self.updated)
            return merged
        for name, value in self.updated.items():
            expected = self.expected.get(name)
            if expected is None or data.get(name) == expected:
                merged[name] = value
        return merged

    @property
    def binds_user(self) -> bool:
        """Whether the changes bind the session to a user or unbind it."""
        return USER_KEY in self.updated or USER_KEY in self.removed

    @property
    def user_id(self) -> str | None:
        """The user the changes bind the session to, or ``None``."""
        value = self.updated.get(USER_KEY)
        return None if value is None else user_id_of(value)


def user_id_of(value: str) -> str | None:
    """Return the user id a stored :data:`USER_KEY` value holds, or ``None``
    for a value that is not a JSON string."""
    try:
        user_id = json.loads(value)
    except ValueError:
        return None
    return user_id if isinstance(user_id, str) else None


@dataclass(frozen=True)
class Record:
    """A session as a store returns it."""

    #: The session's keys mapped to their serialised values.
    data: dict[str, str]
    #: When the session was created (seconds since the epoch).
    created_at: float
    #: When the session expires unless it is used again (seconds since the epoch).
    expires_at: float
    #: The device the session signed in from, in the records of
    #: :meth:`.PrancerSession.user_sessions` when ``devices`` is on; else ``None``.
    device: Device | None = None
