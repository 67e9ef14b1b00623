"""Making the Redis store's client from a URL, and packing its commands."""

from __future__ import annotations

import codecs
import re
import typing as t
from urllib.parse import urlsplit

from ...errors import ConfigurationError

#: Connection options used with ``url`` unless given.
DEFAULT_CONNECTION_OPTIONS: dict[str, t.Any] = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 5.0,
}


def client_from_url(redis: t.Any, url: str, options: dict[str, t.Any]) -> t.Any:
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


def hiredis_packer(
    options: t.Mapping[str, t.Any],
) -> t.Callable[[tuple[t.Any, ...]], bytes] | None:
    """Return hiredis's command packer if redis-py packs with it and encodes
    the arguments as it does (UTF-8, strict): redis-py's wrapper around it
    costs ten times as much."""
    from redis.utils import HIREDIS_AVAILABLE

    encoding = codecs.lookup(options.get("encoding", "utf-8")).name
    if (
        not HIREDIS_AVAILABLE
        or options.get("command_packer") is not None
        or encoding != "utf-8"
        or options.get("encoding_errors", "strict") != "strict"
    ):
        return None
    import hiredis

    return hiredis.pack_command
