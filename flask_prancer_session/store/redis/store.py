"""The Redis store: one hash per session, changed by one Lua script per
operation (in ``scripts/``), with a sorted set per user for "log out
everywhere". The manual's Redis page says what it guarantees."""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
import secrets
import typing as t
from importlib import resources

from ...changes import ChangeSet
from ...changes import Record
from ...changes import user_id_of
from ...changes import USER_KEY
from ...errors import ConfigurationError
from ...errors import SessionStoreError
from ...ids import is_store_key
from ..base import DEFAULT_EXPIRATION_TIMEOUT
from ..base import positive_seconds
from ..base import Seconds
from ..base import StoreDriver
from ..common import glob_escape
from ..common import user_digest
from .client import client_from_url
from .client import hiredis_packer
from .records import DATA
from .records import decode_record
from .records import field
from .records import text
from .users import bulk_failure
from .users import SCAN_BATCH
from .users import UserIndex

if t.TYPE_CHECKING:
    from redis.commands.core import Script

logger = logging.getLogger(__package__ or __name__)


@functools.cache
def _lua(name: str) -> str:
    """Return the Lua script ``name`` from the ``scripts`` folder, with the
    helpers all scripts share before it."""
    folder = resources.files(__package__ or __name__) / "scripts"
    return (folder / "common.lua").read_text("utf-8") + (folder / f"{name}.lua").read_text("utf-8")


# The most fields the short script for the common write takes, whose single
# HSET passes them through Lua's unpack() (some 8000 values at most).
_UPDATE_FIELDS = 1000


class RedisStore(UserIndex, StoreDriver):
    """Keep each session in a Redis hash, changed atomically by Lua scripts.

    :param url: where the server is, for a client made here.
    :param client: a redis-py client to use instead, as given.
    :param key_prefix: prepended to every key name.
    :param replicas: after each write, wait until this many replicas have it
        (Redis's ``WAIT``), and raise :class:`.SessionStoreError` if fewer do
        within ``replica_timeout``: an isolated primary's writes then fail
        instead of being lost at the next failover. Not on a cluster.
    :param replica_timeout: how long a write waits for its replicas.
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
        replicas: int = 0,
        replica_timeout: Seconds = 1.0,
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
            self.client = client_from_url(redis, url, connection_options)
        self._owns_client = client is None
        # A cluster keeps a user's index set in another slot than the session,
        # out of reach of the session's scripts.
        self._cluster = isinstance(self.client, redis.RedisCluster)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ConfigurationError("must be a whole number of replicas", "replicas")
        if replicas and self._cluster:
            raise ConfigurationError(
                "cannot be used with a cluster, whose client cannot wait on the"
                " connection that wrote",
                "replicas",
            )
        #: How many replicas each write waits for (``0``: none).
        self.replicas = replicas
        self._replica_timeout_ms = math.ceil(
            positive_seconds(replica_timeout, "replica_timeout") * 1000
        )
        in_reach = "false" if self._cluster else "true"

        def register(name: str) -> Script:
            script = _lua(name).replace("IN_REACH", in_reach)
            script = script.replace("USER_FIELD", f"'{DATA}{USER_KEY}'")
            return self.client.register_script(script)  # type: ignore[no-any-return]

        self._apply_script = register("apply")
        self._update_script = register("update")
        self._touch_script = register("touch")
        self._remove_script = register("remove")
        self._index_script = register("index")
        # The hot commands skip redis-py's command layer (see _command) on a
        # plain client only: a cluster routes each command itself, a
        # single-connection client holds its connection under a lock, a
        # client-side cache must see every read, and tracing that wraps
        # execute_command (OpenTelemetry's) must see every command.
        self._direct = (
            type(self.client) is redis.Redis
            and self.client.connection is None
            and getattr(self.client.connection_pool, "cache", None) is None
            and not hasattr(redis.Redis.execute_command, "__wrapped__")
        )
        # redis-py 5.0 requires a command name, which later versions
        # deprecate; no pool uses it.
        self._connection_args: tuple[str, ...] = ()
        self._pack: t.Callable[[tuple[t.Any, ...]], bytes] | None = None
        if self._direct:
            pool = self.client.connection_pool
            parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
            if parameter is not None and parameter.default is inspect.Parameter.empty:
                self._connection_args = ("_",)
            self._pack = hiredis_packer(pool.connection_kwargs)

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

    def _command(self, *args: t.Any) -> t.Any:
        """Send one command on a connection of the client's pool and return
        the reply as the parser gives it (no response callback).

        redis-py's command layer costs more per call than a round trip on
        loopback (it inspects every argument several times); the commands
        each request sends take this shorter path, which keeps what that
        layer does for them: the pool checks the process id (fork safety)
        and the connection before handing it out, the connection's retry
        policy retries connection errors on a reconnected connection, and a
        connection that failed is disconnected, never reused as it was.
        """
        pool = self.client.connection_pool
        connection = pool.get_connection(*self._connection_args)
        try:
            if self._pack is None:
                command = connection.pack_command(*args)
            else:
                command = [self._pack(args)]

            def send() -> t.Any:
                connection.send_packed_command(command)
                return connection.read_response()

            return connection.retry.call_with_retry(send, lambda error: connection.disconnect())
        finally:
            pool.release(connection)

    def _eval(self, script: Script, name: str, args: t.Sequence[t.Any]) -> t.Any:
        """Run ``script`` on the session named ``name`` (directly when the
        client allows it), loading it first if the server lost it."""
        if not self._direct:
            return script(keys=[name], args=args)
        try:
            return self._command("EVALSHA", script.sha, 1, name, *args)
        except self._no_script:
            # The server restarted or its scripts were flushed.
            script.sha = self.client.script_load(script.script)
            return self._command("EVALSHA", script.sha, 1, name, *args)

    def fetch(self, key: str) -> Record | None:
        name = self.name_for(key)
        try:
            if self._direct:
                fields = self._command("HGETALL", name)
                if isinstance(fields, list):
                    # RESP2 answers a flat list of names and values.
                    fields = dict(zip(fields[::2], fields[1::2], strict=True))
            else:
                fields = self.client.hgetall(name)
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
        record = decode_record(key, fields)
        if record is None or record.expires_at <= self.clock():
            return None
        return record

    def index_name_for(self, user_id: str) -> str:
        """Return the Redis key name of the set indexing the sessions of
        ``user_id``: a digest of the id, so any id makes a valid hash tag."""
        return self._index_name(user_digest(user_id))

    def _index_name(self, digest: str) -> str:
        return f"{self.key_prefix}user:{{{digest}}}"

    def apply(self, key: str, changes: ChangeSet) -> bool:
        if (
            changes.created_at is None
            and not changes.removed
            and not changes.expected
            and not changes.binds_user
            and len(changes.updated) <= _UPDATE_FIELDS
        ):
            # The common write: a short script, which declines (writing
            # nothing) whatever only the general one does right.
            timeout = self.expiration_timeout if changes.timeout is None else changes.timeout
            args = [
                repr(float(self.clock())),
                repr(float(timeout)),
                "" if self.absolute_timeout is None else repr(self.absolute_timeout),
            ]
            for name, value in changes.updated.items():
                args.extend((DATA + name, value))
            try:
                if self._write(self._update_script, self.name_for(key), args) == 1:
                    return True
            except self._errors as error:
                raise _failure("write", key, error) from error
        return self._apply(key, changes)

    def _apply(self, key: str, changes: ChangeSet) -> bool:
        """Apply ``changes`` with the general script."""
        now = self.clock()
        timeout = self.expiration_timeout if changes.timeout is None else changes.timeout
        binding, member = "", key
        # Listed for twice the timeout: a session in steady use moves its
        # horizon about once per timeout, not per request.
        horizon = repr(float(now + 2 * timeout))
        if changes.binds_user:
            user_id = changes.user_id
            binding = "-" if user_id is None else user_digest(user_id)
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
            (DATA + name, value)
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
        args.extend(DATA + name for name in changes.removed)
        for pair in expected:
            args.extend(pair)
        for name, value in changes.updated.items():
            args.extend((DATA + name, value))
        try:
            if self._cluster and binding not in ("", "-"):
                # Listed before it is bound, so remove_user() never misses it.
                self._index_script(
                    keys=[self._index_name(binding)], args=[member, horizon, repr(float(now))]
                )
            stored, *rest = self._write(self._apply_script, self.name_for(key), args)
            self._follow_up(rest, now)
        except self._errors as error:
            raise _failure("write", key, error) from error
        return bool(stored)

    def _write(self, script: Script, name: str, args: t.Sequence[t.Any]) -> t.Any:
        """Run a script that writes the session named ``name``; with
        :attr:`replicas`, on one connection with a ``WAIT`` for them after it."""
        if not self.replicas:
            return self._eval(script, name, args)
        pipe = self.client.pipeline(transaction=False)
        script(keys=[name], args=args, client=pipe)
        pipe.execute_command("WAIT", self.replicas, self._replica_timeout_ms)
        reply, acknowledged = pipe.execute()
        if acknowledged < self.replicas:
            raise SessionStoreError(
                f"Redis replicated the write to {acknowledged} of {self.replicas} replicas"
                " in time; it may be lost at the next failover."
            )
        return reply

    def touch(self, key: str, expires_at: float) -> None:
        now = self.clock()
        ttl_ms = max(1000, math.ceil((expires_at - now) * 1000))
        args: list[str | int] = [repr(float(now)), repr(float(expires_at)), ttl_ms]
        try:
            _, *rest = self._write(self._touch_script, self.name_for(key), args)
            self._follow_up(rest, now)
        except self._errors as error:
            raise _failure("touch", key, error) from error

    def _follow_up(self, reply: list[t.Any], now: float) -> None:
        """Make the changes to the user sets that a cluster's script asks
        for: move a member's horizon, then drop the members it names."""
        digest, until, member, *unlisted = (text(part) for part in reply)
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
            outcome, *unlisted = self._write(self._remove_script, self.name_for(key), args)
            self._unlist([text(part) for part in unlisted])
        except self._errors as error:
            raise _failure("delete", key, error) from error
        return bool(outcome)

    indexes_users = True

    def scan(self) -> t.Iterator[tuple[str, Record]]:
        try:
            for batch in self._batches():
                now = self.clock()
                for key, raw in batch:
                    record = decode_record(key, raw)
                    if record is not None and record.expires_at > now:
                        yield key, record
        except self._errors as error:
            raise bulk_failure("list the sessions", error) from error

    def clear(self) -> int:
        deleted = 0
        try:
            for batch in self._batches():
                now = self.clock()
                pipe = self.client.pipeline(transaction=False)
                for key, raw in batch:
                    record = decode_record(key, raw)
                    deleted += record is not None and record.expires_at > now
                    pipe.delete(self.name_for(key))
                    # A deleted session never comes back (keys are not reused,
                    # and only a new session's first write creates one), so
                    # its index entry can go.
                    digest = field(raw, "user")
                    if digest:
                        pipe.zrem(self._index_name(digest), field(raw, "listed") or key)
                pipe.execute()
        except self._errors as error:
            raise bulk_failure("delete the sessions", error) from error
        return deleted

    def _batches(self) -> t.Iterator[list[tuple[str, t.Mapping[t.Any, t.Any]]]]:
        """Yield the store keys and hash fields of this prefix's sessions, a
        ``SCAN`` batch at a time; on a cluster ``scan_iter`` visits every
        primary."""
        prefix = f"{self.key_prefix}{{"
        names = self.client.scan_iter(match=glob_escape(prefix) + "*}", count=SCAN_BATCH)
        while batch := list(itertools.islice(names, SCAN_BATCH)):
            keys = []
            for name in batch:
                try:
                    key = text(name)[len(prefix) : -1]
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


def _failure(action: str, key: str, error: BaseException) -> SessionStoreError:
    logger.error("Redis could not %s session %.8s...: %s", action, key, error)
    return SessionStoreError(f"Redis could not {action} the session: {error}", error)
