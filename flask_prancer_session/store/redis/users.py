"""The Redis store's index of sessions by user: a sorted set per user, read
and ended in batches of :data:`SCAN_BATCH`."""

from __future__ import annotations

import typing as t

from ...changes import Record
from ...changes import user_id_of
from ...changes import USER_KEY
from ...errors import SessionStoreError
from ..common import user_digest
from .records import decode_record
from .records import key_of
from .records import logger
from .records import text

if t.TYPE_CHECKING:
    from redis.commands.core import Script

#: How many keys one ``SCAN`` step asks for, and one pipeline fetches.
SCAN_BATCH = 500


class UserIndex:
    """The user index, mixed into :class:`.RedisStore`, whose client,
    scripts and key names it uses."""

    if t.TYPE_CHECKING:
        client: t.Any
        clock: t.Callable[[], float]
        _errors: tuple[type[BaseException], ...]
        _no_script: type[BaseException]
        _remove_script: Script

        def index_name_for(self, user_id: str) -> str: ...
        def _index_name(self, digest: str) -> str: ...
        def name_for(self, key: str) -> str: ...
        def _fetch_many(self, keys: list[str]) -> list[t.Mapping[t.Any, t.Any]]: ...
        def _unlist(self, pairs: list[str]) -> None: ...

    def _members(self, name: str, now: float) -> list[tuple[str, str]]:
        """Return the store keys and members listed in the user set
        ``name``, dropping first the members whose horizon has passed."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(name, "-inf", repr(float(now)))
        pipe.zrange(name, 0, -1)
        members = []
        for raw in pipe.execute()[1]:
            member = text(raw)
            key = key_of(member)
            if key is not None:
                members.append((key, member))
        return members

    def _run_many(self, script: Script, calls: list[tuple[str, list[str]]]) -> list[t.Any]:
        """Run ``script`` once per key and arguments in ``calls``, all in one
        pipeline (on a cluster, one per node), and return the replies."""
        replies: list[t.Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for n in pending:
                name, args = calls[n]
                # A cluster pipeline of redis-py 5.0 refuses evalsha() but
                # routes the command by its key.
                pipe.execute_command("EVALSHA", script.sha, 1, name, *args)
            missing = []
            for n, reply in zip(pending, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(reply, self._no_script) and not attempt:
                    missing.append(n)
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    replies[n] = reply
            if not missing:
                break
            # The server restarted or its scripts were flushed: load it again
            # (on every primary of a cluster).
            script.sha = self.client.script_load(script.script)
            pending = missing
        return replies

    def sessions_of(self, user_id: str) -> dict[str, Record]:
        name = self.index_name_for(user_id)
        now = self.clock()
        sessions = {}
        try:
            # Entries past their horizon belong to sessions that are gone; a
            # cluster may list a session twice for a moment.
            keys = list(dict.fromkeys(key for key, _ in self._members(name, now)))
            for first in range(0, len(keys), SCAN_BATCH):
                batch = keys[first : first + SCAN_BATCH]
                for key, raw in zip(batch, self._fetch_many(batch), strict=True):
                    record = decode_record(key, raw) if raw else None
                    # The set may still list sessions that ended or changed
                    # hands (on a cluster, or when Redis expired them).
                    if (
                        record is not None
                        and record.expires_at > now
                        and user_id_of(record.data.get(USER_KEY, "null")) == user_id
                    ):
                        sessions[key] = record
        except self._errors as error:
            raise bulk_failure("read the sessions of a user", error) from error
        return sessions

    def remove_user(self, user_id: str) -> int:
        digest = user_digest(user_id)
        name = self._index_name(digest)
        removed = 0
        try:
            members = self._members(name, self.clock())
            for first in range(0, len(members), SCAN_BATCH):
                now = repr(float(self.clock()))
                # Only if still bound to this user: the set may list sessions
                # that changed hands, or (on a cluster) that are about to be
                # created. A deleted session never comes back, so its members
                # go (by the script itself on a single server).
                calls = [
                    (self.name_for(key), [now, digest, member])
                    for key, member in members[first : first + SCAN_BATCH]
                ]
                unlisted: list[str] = []
                for outcome, *pairs in self._run_many(self._remove_script, calls):
                    removed += outcome > 0
                    unlisted.extend(text(part) for part in pairs)
                self._unlist(unlisted)
        except self._errors as error:
            raise bulk_failure("delete the sessions of a user", error) from error
        return removed


def bulk_failure(action: str, error: BaseException) -> SessionStoreError:
    logger.error("Redis could not %s: %s", action, error)
    return SessionStoreError(f"Redis could not {action}: {error}", error)
