"""Sessions in Redis, one hash per session.

.. code-block:: python

    app.config["PRANCER_SESSION"] = {
        "store": {"driver": "redis", "options": {"url": "redis://localhost:6379/0"}},
    }

Each session is one Redis hash named ``<key_prefix>{<store key>}``, with a
field ``d:<name>`` per session key holding its serialised value, and the
fields ``created`` and ``expires`` (seconds since the epoch). Every operation
is one round trip (but see the user index below on a cluster):
:meth:`~RedisStore.fetch` is one ``HGETALL``, and :meth:`~RedisStore.apply`,
:meth:`~RedisStore.touch` and :meth:`~RedisStore.remove` are one Lua script
each (``EVALSHA``), which the server runs atomically. So two requests of one
visitor that change different keys both keep their writes; a session left
without keys is deleted by the script that removed its last one, while a key
another request added meanwhile keeps it; once a session is expired or
removed, no other request's save brings it back; and a compare-and-set
(:attr:`~flask_prancer_session.changes.ChangeSet.expected`, as ``flask session
rekey`` writes) compares in the same script, so a value changed meanwhile, a
logout say, is never overwritten with the one read before. Redis deletes
each hash by itself (its TTL follows the session's expiry), so
:meth:`~RedisStore.purge` has nothing to do. The ``redis`` extra installs
``hiredis``, which redis-py then uses to parse replies, several times faster
than its own parser.

:meth:`~RedisStore.scan` and :meth:`~RedisStore.clear` walk the prefix's
sessions with ``SCAN`` (every primary of a cluster), 500 at a time.

Sessions by user ("log out everywhere"). A session bound to a user (see
:data:`~flask_prancer_session.changes.USER_KEY`) also holds the SHA-256 of
the user id in a field ``user``, and is listed in a sorted set named
``<key_prefix>user:{<that digest>}`` by the member in its field ``listed``,
scored by a horizon: a time past the session's expiry, kept in its field
``indexed``. :meth:`~RedisStore.sessions_of` and
:meth:`~RedisStore.remove_user` read the set, then the listed sessions 500 at
a time, one pipeline per batch, and only count those that are live and still
bound to the user; ``remove_user`` deletes each one with a script that checks
the binding.

An entry goes when its binding ends: when the session is unbound, bound to
someone else, removed, emptied, or started afresh after it expired. A
session that Redis deleted by itself when its TTL ran out, which no script
sees, stays listed until its horizon, at most one idle timeout past its
expiry; then the next write to the set drops it, and the set itself expires
with its latest horizon. So a set holds its user's live sessions, and those
that expired within the last idle timeout, however often the user logs in
and out. No race can unlist a live bound session, and no session bound to
the user when ``remove_user`` begins survives it. What is atomic:

* on a single server (a ``redis.Redis`` client, Sentinel included), the
  scripts reach the user sets (by name, which Redis allows outside a
  cluster), so binding a session and listing it, ending a binding and
  unlisting it, and moving a horizon as the sliding expiry passes it are
  each part of one script, one round trip. ``remove_user`` also drops the
  entries of sessions that are not bound to the user (they are stale here);
* on a cluster (a ``RedisCluster`` client) the set lives in another slot than
  the session. The session is listed first, by a command of its own, and
  bound next: a failure between the two leaves only an extra entry. Each
  binding is listed under a member of its own (``<store key>:<random
  token>``), and the script that ends a binding names its member for a
  command that drops it next; since a later binding of the same session has
  another member, that command never unlists it. When a bound session's
  sliding expiry passes its horizon, the script asks for a command that moves
  the horizon to one idle timeout past the new expiry, about once per
  timeout of activity. If one of these commands fails (the write raises
  :class:`~flask_prancer_session.errors.SessionStoreError`), an entry may
  stay until its horizon, or the session may be missing from its user's set
  for up to one idle timeout. ``remove_user`` sends one pipeline per node and
  one command to the set per batch, and leaves the entries of sessions not
  bound to the user, which may be about to be.

Keys of other data must not look like ``<key_prefix>{...}``, and no other
store's ``key_prefix`` should be this one's followed by ``user:``.

Options:

``url``
    ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, passed to
    ``redis.Redis.from_url``. Exactly one of ``url`` and ``client`` is required.
``client``
    A ready redis-py client, used as given: ``redis.Redis``,
    ``redis.cluster.RedisCluster``, or ``Sentinel(...).master_for(name)``.
``key_prefix``
    Prepended to every key name, default ``"prancer:session:"``. It may not
    contain ``{`` or ``}``, which would move the hash tag.
Connection options
    Any other keyword, such as ``socket_timeout``, ``socket_connect_timeout``,
    ``health_check_interval``, ``max_connections`` or ``ssl_ca_certs``, is
    passed to ``from_url``. ``socket_timeout`` and ``socket_connect_timeout``
    default to 5 seconds here (redis-py waits forever), so a hung server fails
    the request instead of hanging the worker. Only with ``url``.

plus the common ``expiration_timeout``, ``permanent_timeout``, ``absolute_timeout``,
``autopurge`` and ``autopurge_probability``.

Timeouts are at most ten years, which Redis's millisecond TTLs hold.

Redis Cluster: the store key inside the name is a hash tag, so everything a
session keeps lives in one slot, and the scripts, which then only touch that
key (the client changes the user sets, as above), run on a cluster too.
Failures (server down, timeout, failover in progress) raise
:class:`~flask_prancer_session.errors.SessionStoreError`; redis-py's own
retry options apply before that. A write that timed out may
still have been applied (the server may only have been slow); either way the
next request sees a whole session. A dropped connection is reconnected by
redis-py on the next use.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
import secrets
import typing as t
from urllib.parse import urlsplit

from ..changes import ChangeSet
from ..changes import Record
from ..changes import user_id_of
from ..changes import USER_KEY
from ..errors import ConfigurationError
from ..errors import SessionStoreError
from ..ids import is_store_key
from .base import DEFAULT_EXPIRATION_TIMEOUT
from .base import Seconds
from .base import StoreDriver

if t.TYPE_CHECKING:
    from redis.commands.core import Script

logger = logging.getLogger(__name__)

#: Connection options used with ``url`` unless given.
DEFAULT_CONNECTION_OPTIONS: dict[str, t.Any] = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 5.0,
}

_DATA = "d:"

# unpack() is bounded by Lua's C stack (some 8000 values), so many fields are
# sent in chunks. A key of another type makes HMGET/HGET fail: redis.pcall
# turns that into "no session" without a TYPE call first. KEYS[1] is
# <prefix>{<store key>}, which names the user sets too (they share the
# prefix). IN_REACH becomes true on a single server, where the scripts change
# the user sets themselves, and false on a cluster, where the sets live in
# other slots: there the scripts return the entries to drop, and the client
# drops them next.
_LUA_HELPERS = """
local key = KEYS[1]
local store_key = string.sub(key, -65, -2)
local prefix = string.sub(key, 1, -67)
local in_reach = IN_REACH
local function chunked(command, args, first, last)
  for i = first, last, 1000 do
    redis.call(command, key, unpack(args, i, math.min(i + 999, last)))
  end
end
local function fmt(x)
  return string.format('%.17g', x)
end
-- tonumber() takes 'nan' and 'inf', which fetch() rejects as corrupt.
local function finite(x)
  return x ~= nil and x == x and x > -math.huge and x < math.huge
end
-- The creation time if the session is live (else nil), then, live or not,
-- its user's digest, its index horizon and its entry in that user's set.
local function live(now)
  local meta = redis.pcall('HMGET', key, 'created', 'expires', 'user', 'indexed', 'listed')
  if meta.err then
    return nil, nil, nil, store_key
  end
  local created, expires = tonumber(meta[1]), tonumber(meta[2])
  if not (finite(created) and finite(expires) and expires > now) then
    created = nil
  end
  return created, meta[3] or nil, tonumber(meta[4]), meta[5] or store_key
end
local function index_of(digest)
  return prefix .. 'user:{' .. digest .. '}'
end
-- Lists member in the user index set until horizon at least, drops the
-- members whose horizon has passed, and keeps the set as long as its
-- latest horizon.
local function index(set, member, horizon, now)
  local score = tonumber(redis.call('ZSCORE', set, member))
  if score == nil or score < horizon then
    redis.call('ZADD', set, fmt(horizon), member)
  end
  redis.call('ZREMRANGEBYSCORE', set, '-inf', fmt(now))
  local top = tonumber(redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIRE', set, string.format('%d', math.max(1000, math.ceil((top - now) * 1000))))
end
-- The entries to drop that are out of reach, as digest/member pairs.
local unlisted = {}
local function unlist(digest, member)
  if in_reach then
    redis.call('ZREM', index_of(digest), member)
  else
    unlisted[#unlisted + 1] = digest
    unlisted[#unlisted + 1] = member
  end
end
"""

# ARGV: now, idle timeout, absolute timeout or "", created_at or "", the
# binding ("" unchanged, "-" none, or the user's digest), the member that
# lists the session in the set of a new binding and its horizon, the numbers
# of removed fields and of expected fields, then the removed fields, the
# field/expected value pairs, and the field/value pairs to set. Returns {1 if
# a session is stored afterwards, then (only on a cluster) the digest whose
# set must keep the member (the fourth value) until the horizon (the third
# value) or "", then digest/member pairs to drop}. The times are written with
# %.17g so the floats read back exactly as sent.
_APPLY_SCRIPT = (
    _LUA_HELPERS
    + """
local now = tonumber(ARGV[1])
local binding, member = ARGV[5], ARGV[6]
local first_expected = 10 + tonumber(ARGV[8])
local first_set = first_expected + 2 * tonumber(ARGV[9])
local created, user, indexed, listed = live(now)
-- Compare-and-set: a field whose stored value is no longer the expected one
-- keeps it (a field removed meanwhile stays removed).
local changed = {}
for i = first_expected, first_set - 1, 2 do
  if created == nil or redis.call('HGET', key, ARGV[i]) ~= ARGV[i + 1] then
    changed[ARGV[i]] = true
  end
end
if changed[USER_FIELD] then
  binding = ''
end
local fields = {}
for i = first_set, #ARGV, 2 do
  if not changed[ARGV[i]] then
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
end
local values = #fields
local adopted = false
local function reply(stored, due)
  -- A cluster listed a new binding's member before this script: unless the
  -- session took it, it must go.
  if not in_reach and not adopted and ARGV[5] ~= '' and ARGV[5] ~= '-' then
    unlist(ARGV[5], member)
  end
  if due == nil then
    return {stored, '', '', '', unpack(unlisted)}
  end
  return {stored, due, fmt(indexed), listed, unpack(unlisted)}
end
if created == nil then
  if ARGV[4] == '' or values == 0 then
    return reply(0)
  end
  -- An expired or corrupt hash, or a key of another type: start afresh.
  if user ~= nil then
    unlist(user, listed)
  end
  redis.call('DEL', key)
  created, user, indexed = tonumber(ARGV[4]), nil, nil
  fields[#fields + 1] = 'created'
  fields[#fields + 1] = fmt(created)
elseif first_expected > 10 then
  chunked('HDEL', ARGV, 10, first_expected - 1)
  if values == 0 then
    local empty = true
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, 2) == 'd:' then
        empty = false
        break
      end
    end
    if empty then
      if user ~= nil then
        unlist(user, listed)
      end
      redis.call('DEL', key)
      return reply(0)
    end
  end
end
if binding == '-' then
  if user ~= nil then
    unlist(user, listed)
  end
  redis.call('HDEL', key, 'user', 'indexed', 'listed')
  user = nil
elseif binding ~= '' and binding ~= user then
  if user ~= nil then
    unlist(user, listed)
  end
  user, indexed, listed, adopted = binding, tonumber(ARGV[7]), member, true
  if in_reach then
    index(index_of(user), listed, indexed, now)
  end
  fields[#fields + 1] = 'user'
  fields[#fields + 1] = user
  fields[#fields + 1] = 'indexed'
  fields[#fields + 1] = ARGV[7]
  fields[#fields + 1] = 'listed'
  fields[#fields + 1] = listed
end
local expires = now + tonumber(ARGV[2])
if ARGV[3] ~= '' then
  expires = math.min(expires, created + tonumber(ARGV[3]))
end
fields[#fields + 1] = 'expires'
fields[#fields + 1] = fmt(expires)
local due = nil
if user ~= nil and not (indexed and indexed >= expires) then
  indexed = 2 * expires - now
  fields[#fields + 1] = 'indexed'
  fields[#fields + 1] = fmt(indexed)
  if in_reach then
    index(index_of(user), listed, indexed, now)
  else
    due = user
  end
end
chunked('HSET', fields, 1, #fields)
redis.call('PEXPIRE', key, string.format('%d', math.max(1000, math.ceil((expires - now) * 1000))))
return reply(1, due)
""".replace("USER_FIELD", f"'{_DATA}{USER_KEY}'")
)

# ARGV: now, new expires_at, TTL in milliseconds. Returns like apply.
_TOUCH_SCRIPT = (
    _LUA_HELPERS
    + """
local now = tonumber(ARGV[1])
local created, user, indexed, listed = live(now)
if created == nil then
  return {0, '', '', ''}
end
local expires = tonumber(ARGV[2])
redis.call('HSET', key, 'expires', ARGV[2])
redis.call('PEXPIRE', key, ARGV[3])
if user == nil or (indexed and indexed >= expires) then
  return {1, '', '', ''}
end
indexed = 2 * expires - now
redis.call('HSET', key, 'indexed', fmt(indexed))
if in_reach then
  index(index_of(user), listed, indexed, now)
  return {1, '', '', ''}
end
return {1, user, fmt(indexed), listed}
"""
)

# ARGV: now, then for remove_user the digest of the user the session must be
# bound to and the member of that user's set that names it. Returns {1 if a
# live session was deleted, 0 if none was, or -1 if the session is not bound
# to that user and was left alone; then digest/member pairs to drop}.
_REMOVE_SCRIPT = (
    _LUA_HELPERS
    + """
local created, user, _, listed = live(tonumber(ARGV[1]))
if ARGV[2] ~= nil and user ~= ARGV[2] then
  if in_reach then
    -- Here a session is listed in the same step as it is bound: the entry
    -- is stale, and a later binding lists it again.
    redis.call('ZREM', index_of(ARGV[2]), ARGV[3])
  end
  return {-1}
end
redis.call('DEL', key)
if user ~= nil then
  unlist(user, listed)
end
if ARGV[3] ~= nil and ARGV[3] ~= listed then
  unlist(ARGV[2], ARGV[3])
end
return {created and 1 or 0, unpack(unlisted)}
"""
)

# KEYS[1]: an index set. ARGV: the member, its horizon, now.
_INDEX_SCRIPT = (
    _LUA_HELPERS
    + """
index(key, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
"""
)

#: How many keys one ``SCAN`` step asks for, and one pipeline fetches.
SCAN_BATCH = 500


class RedisStore(StoreDriver):
    """Keep each session in a Redis hash, changed atomically by Lua scripts.

    :param url: where the server is, for a client made here.
    :param client: a redis-py client to use instead, as given.
    :param key_prefix: prepended to every key name.
    :param connection_options: passed to ``redis.Redis.from_url`` with ``url``.
    """

    #: Redis deletes each hash by itself when its TTL, which follows the
    #: session's expiry, runs out: :meth:`purge` has nothing to do.
    expires_natively = True

    def __init__(
        self,
        *,
        url: str | None = None,
        client: t.Any = None,
        key_prefix: str = "prancer:session:",
        expiration_timeout: Seconds = DEFAULT_EXPIRATION_TIMEOUT,
        permanent_timeout: Seconds | None = None,
        absolute_timeout: Seconds | None = None,
        autopurge: bool = False,
        autopurge_probability: float = 0.1,
        **connection_options: t.Any,
    ) -> None:
        super().__init__(
            expiration_timeout=expiration_timeout,
            permanent_timeout=permanent_timeout,
            absolute_timeout=absolute_timeout,
            autopurge=autopurge,
            autopurge_probability=autopurge_probability,
        )
        try:
            import redis
        except ImportError as error:
            raise ConfigurationError(
                "the redis store needs redis-py: pip install 'flask-prancer-session[redis]'"
            ) from error
        if not isinstance(key_prefix, str) or "{" in key_prefix or "}" in key_prefix:
            raise ConfigurationError("must be a string without '{' or '}'", "key_prefix")
        self.key_prefix = key_prefix
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
        )
        self._no_script: type[BaseException] = redis.exceptions.NoScriptError
        if client is not None:
            if url is not None:
                raise ConfigurationError("give either url or client, not both", "client")
            if connection_options:
                raise ConfigurationError(
                    "only applies with url; configure the client instead",
                    next(iter(connection_options)),
                )
            #: The redis-py client: any client with the ``redis.Redis`` API.
            self.client: t.Any = client
        elif url is None:
            raise ConfigurationError("a redis://, rediss:// or unix:// URL is required", "url")
        else:
            self.client = _client_from_url(redis, url, connection_options)
        self._owns_client = client is None
        # A cluster keeps a user's index set in another slot than the session,
        # out of reach of the session's scripts.
        self._cluster = isinstance(self.client, redis.RedisCluster)
        in_reach = "false" if self._cluster else "true"

        def register(script: str) -> Script:
            script = script.replace("IN_REACH", in_reach)
            return self.client.register_script(script)  # type: ignore[no-any-return]

        self._apply_script = register(_APPLY_SCRIPT)
        self._touch_script = register(_TOUCH_SCRIPT)
        self._remove_script = register(_REMOVE_SCRIPT)
        self._index_script = register(_INDEX_SCRIPT)

    def name_for(self, key: str) -> str:
        """Return the Redis key name of the session stored under ``key``.

        The store key is a hash tag, so in Redis Cluster the slot depends on
        it alone, whatever the prefix.
        """
        return f"{self.key_prefix}{{{key}}}"

    def close(self) -> None:
        super().close()
        if self._owns_client:
            self.client.connection_pool.disconnect()

    def fetch(self, key: str) -> Record | None:
        try:
            fields = self.client.hgetall(self.name_for(key))
        except UnicodeDecodeError:
            # Only a client with decode_responses=True decodes while reading.
            logger.warning("Session %.8s... in Redis is not UTF-8; ignoring it", key)
            return None
        except self._errors as error:
            if str(error).startswith("WRONGTYPE"):
                logger.warning("Session %.8s... in Redis is not a hash; ignoring it", key)
                return None
            raise _failure("read", key, error) from error
        if not fields:
            return None
        record = _decode(key, fields)
        if record is None or record.expires_at <= self.clock():
            return None
        return record

    def index_name_for(self, user_id: str) -> str:
        """Return the Redis key name of the set indexing the sessions of
        ``user_id``: a digest of the id, so any id makes a valid hash tag."""
        return self._index_name(_digest(user_id))

    def _index_name(self, digest: str) -> str:
        return f"{self.key_prefix}user:{{{digest}}}"

    def apply(self, key: str, changes: ChangeSet) -> bool:
        now = self.clock()
        timeout = self.expiration_timeout if changes.timeout is None else changes.timeout
        binding, member = "", key
        # Listed for twice the timeout: a session in steady use moves its
        # horizon about once per timeout, not per request.
        horizon = repr(float(now + 2 * timeout))
        if changes.binds_user:
            user_id = changes.user_id
            binding = "-" if user_id is None else _digest(user_id)
            was = changes.expected.get(USER_KEY)
            if was is not None and USER_KEY in changes.updated and user_id_of(was) == user_id:
                # Written only if the session is still bound to this same
                # user, so the binding does not change either way.
                binding = ""
        if self._cluster and binding not in ("", "-"):
            # Each binding's own member: the command that drops it after the
            # binding ends can never drop the member of a later one.
            member = f"{key}:{secrets.token_hex(8)}"
        expected = [
            (_DATA + name, value)
            for name, value in changes.expected.items()
            if name in changes.updated
        ]
        args: list[str | int] = [
            repr(float(now)),
            repr(float(timeout)),
            "" if self.absolute_timeout is None else repr(self.absolute_timeout),
            "" if changes.created_at is None else repr(float(changes.created_at)),
            binding,
            member,
            horizon,
            len(changes.removed),
            len(expected),
        ]
        args.extend(_DATA + name for name in changes.removed)
        for pair in expected:
            args.extend(pair)
        for name, value in changes.updated.items():
            args.extend((_DATA + name, value))
        try:
            if self._cluster and binding not in ("", "-"):
                # Listed before it is bound, so remove_user() never misses it.
                self._index_script(
                    keys=[self._index_name(binding)], args=[member, horizon, repr(float(now))]
                )
            stored, *rest = self._apply_script(keys=[self.name_for(key)], args=args)
            self._follow_up(rest, now)
        except self._errors as error:
            raise _failure("write", key, error) from error
        return bool(stored)

    def touch(self, key: str, expires_at: float) -> None:
        now = self.clock()
        ttl_ms = max(1000, math.ceil((expires_at - now) * 1000))
        args: list[str | int] = [repr(float(now)), repr(float(expires_at)), ttl_ms]
        try:
            _, *rest = self._touch_script(keys=[self.name_for(key)], args=args)
            self._follow_up(rest, now)
        except self._errors as error:
            raise _failure("touch", key, error) from error

    def _follow_up(self, reply: list[t.Any], now: float) -> None:
        """Make the changes to the user sets that a cluster's script asks
        for: move a member's horizon, then drop the members it names."""
        digest, until, member, *unlisted = (_text(part) for part in reply)
        if digest:
            self._index_script(
                keys=[self._index_name(digest)], args=[member, until, repr(float(now))]
            )
        self._unlist(unlisted)

    def _unlist(self, pairs: list[str]) -> None:
        """Drop members from user sets, given as digest, member, digest,
        member... (always none on a single server, whose scripts drop them)."""
        members: dict[str, list[str]] = {}
        for digest, member in zip(pairs[::2], pairs[1::2], strict=True):
            members.setdefault(self._index_name(digest), []).append(member)
        for name, names in members.items():
            self.client.zrem(name, *names)

    def remove(self, key: str) -> bool:
        args = [repr(float(self.clock()))]
        try:
            outcome, *unlisted = self._remove_script(keys=[self.name_for(key)], args=args)
            self._unlist([_text(part) for part in unlisted])
        except self._errors as error:
            raise _failure("delete", key, error) from error
        return bool(outcome)

    indexes_users = True

    def scan(self) -> t.Iterator[tuple[str, Record]]:
        try:
            for batch in self._batches():
                now = self.clock()
                for key, raw in batch:
                    record = _decode(key, raw)
                    if record is not None and record.expires_at > now:
                        yield key, record
        except self._errors as error:
            raise _bulk_failure("list the sessions", error) from error

    def clear(self) -> int:
        deleted = 0
        try:
            for batch in self._batches():
                now = self.clock()
                pipe = self.client.pipeline(transaction=False)
                for key, raw in batch:
                    record = _decode(key, raw)
                    deleted += record is not None and record.expires_at > now
                    pipe.delete(self.name_for(key))
                    # A deleted session never comes back (keys are not reused,
                    # and only a new session's first write creates one), so
                    # its index entry can go.
                    digest = _field(raw, "user")
                    if digest:
                        pipe.zrem(self._index_name(digest), _field(raw, "listed") or key)
                pipe.execute()
        except self._errors as error:
            raise _bulk_failure("delete the sessions", error) from error
        return deleted

    def _batches(self) -> t.Iterator[list[tuple[str, t.Mapping[t.Any, t.Any]]]]:
        """Yield the store keys and hash fields of this prefix's sessions, a
        ``SCAN`` batch at a time; on a cluster ``scan_iter`` visits every
        primary."""
        prefix = f"{self.key_prefix}{{"
        names = self.client.scan_iter(match=_glob_escape(prefix) + "*}", count=SCAN_BATCH)
        while batch := list(itertools.islice(names, SCAN_BATCH)):
            keys = []
            for name in batch:
                try:
                    key = _text(name)[len(prefix) : -1]
                except ValueError:
                    continue
                if is_store_key(key):
                    keys.append(key)
            yield [(key, raw) for key, raw in zip(keys, self._fetch_many(keys), strict=True) if raw]

    def _fetch_many(self, keys: list[str]) -> list[t.Mapping[t.Any, t.Any]]:
        """Return the hash fields of the sessions under ``keys`` ({} where
        there is none, or it is not a hash)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self.name_for(key))
        try:
            replies = pipe.execute(raise_on_error=False)
        except UnicodeDecodeError:
            # A client with decode_responses=True fails the whole batch for
            # one session that is not UTF-8: read them one by one instead.
            return [self._fetch_raw(key) for key in keys]
        return [reply if isinstance(reply, dict) else {} for reply in replies]

    def _fetch_raw(self, key: str) -> t.Mapping[t.Any, t.Any]:
        try:
            return self.client.hgetall(self.name_for(key))  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            return {}
        except self._errors as error:
            if str(error).startswith("WRONGTYPE"):
                return {}
            raise

    def _members(self, name: str, now: float) -> list[tuple[str, str]]:
        """Return the store keys and members listed in the user set
        ``name``, dropping first the members whose horizon has passed."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(name, "-inf", repr(float(now)))
        pipe.zrange(name, 0, -1)
        members = []
        for raw in pipe.execute()[1]:
            member = _text(raw)
            key = _key_of(member)
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
                pipe.evalsha(script.sha, 1, name, *args)
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
                    record = _decode(key, raw) if raw else None
                    # The set may still list sessions that ended or changed
                    # hands (on a cluster, or when Redis expired them).
                    if (
                        record is not None
                        and record.expires_at > now
                        and user_id_of(record.data.get(USER_KEY, "null")) == user_id
                    ):
                        sessions[key] = record
        except self._errors as error:
            raise _bulk_failure("read the sessions of a user", error) from error
        return sessions

    def remove_user(self, user_id: str) -> int:
        digest = _digest(user_id)
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
                    unlisted.extend(_text(part) for part in pairs)
                self._unlist(unlisted)
        except self._errors as error:
            raise _bulk_failure("delete the sessions of a user", error) from error
        return removed


def _client_from_url(redis: t.Any, url: str, options: dict[str, t.Any]) -> t.Any:
    if not isinstance(url, str) or urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
        raise ConfigurationError("must be a redis://, rediss:// or unix:// URL", "url")
    try:
        client = redis.Redis.from_url(url, **{**DEFAULT_CONNECTION_OPTIONS, **options})
        # redis-py connects lazily and only then rejects unknown options; make
        # (without connecting) one connection now so a typo stops the app.
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as error:
        match = re.search(r"keyword argument '(\w+)'", str(error))
        raise ConfigurationError(
            f"not a redis-py connection option: {error}", match.group(1) if match else "url"
        ) from error
    except ValueError as error:
        raise ConfigurationError(str(error), "url") from error
    return client


def _decode(key: str, raw: t.Mapping[t.Any, t.Any]) -> Record | None:
    try:
        fields = {_text(name): _text(value) for name, value in raw.items()}
        created_at = _seconds(fields.pop("created"))
        expires_at = _seconds(fields.pop("expires"))
    except (KeyError, ValueError) as error:
        # UnicodeDecodeError is a ValueError too.
        logger.warning("Session %.8s... in Redis cannot be decoded (%r); ignoring it", key, error)
        return None
    data = {name[len(_DATA) :]: value for name, value in fields.items() if name.startswith(_DATA)}
    return Record(data, created_at, expires_at)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise ValueError(f"unexpected {type(value).__name__} from Redis")


def _seconds(value: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a time")
    return seconds


def _digest(user_id: str) -> str:
    # surrogatepass: a user id read from JSON may hold a lone surrogate.
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


def _key_of(member: str) -> str | None:
    """Return the store key a user set's member names: the key itself, or on
    a cluster the key, a colon and its binding's token."""
    key = member[:64]
    if is_store_key(key) and member[64:65] in ("", ":"):
        return key
    return None


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _field(raw: t.Mapping[t.Any, t.Any], name: str) -> str | None:
    value = raw.get(name, raw.get(name.encode()))
    try:
        return None if value is None else _text(value)
    except ValueError:
        return None


def _failure(action: str, key: str, error: BaseException) -> SessionStoreError:
    logger.error("Redis could not %s session %.8s...: %s", action, key, error)
    return SessionStoreError(f"Redis could not {action} the session: {error}", error)


def _bulk_failure(action: str, error: BaseException) -> SessionStoreError:
    logger.error("Redis could not %s: %s", action, error)
    return SessionStoreError(f"Redis could not {action}: {error}", error)
