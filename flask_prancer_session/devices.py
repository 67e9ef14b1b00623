"""What a "your devices" page shows of each session bound to a user.

With ``PRANCER_SESSION["devices"]`` on, a session bound to a user also keeps a
short description of the device that signed in: a browser and OS summary of
its ``User-Agent`` (never the header itself unless asked), a coarse network
(the IPv4 /24 or IPv6 /48 of the client's address), when it signed in and when
it was last seen. Sessions that are not bound to a user keep nothing more.
"""

from __future__ import annotations

import ipaddress
import re
import typing as t
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone

from .errors import ConfigurationError

if t.TYPE_CHECKING:
    from flask import Request

#: The session key of the device description, beside the user binding.
DEVICE_KEY = "_prancer_device"
#: The least time between two updates of a session's last-seen time.
DEFAULT_LAST_SEEN_INTERVAL = 300.0
#: User-Agent headers longer than this are cut before parsing and storing.
MAX_USER_AGENT_LENGTH = 512

# Order matters: Edge and Opera also say Chrome, Chrome also says Safari.
_BROWSERS = (
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/(\d{1,4})")),
    ("Opera", re.compile(r"(?:OPR|Opera)/(\d{1,4})")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/(\d{1,4})")),
    ("Firefox", re.compile(r"(?:Firefox|FxiOS)/(\d{1,4})")),
    ("Chrome", re.compile(r"(?:Chrome|CriOS)/(\d{1,4})")),
    ("Safari", re.compile(r"Version/(\d{1,4})[.\d]* (?:Mobile/\w+ )?Safari/")),
    ("curl", re.compile(r"^curl/(\d{1,4})")),
    ("Python requests", re.compile(r"^python-requests/(\d{1,4})")),
)
_SYSTEMS = (
    ("iPadOS", re.compile(r"\(iPad;")),
    ("iOS", re.compile(r"\((?:iPhone|iPod)")),
    ("Android", re.compile(r"Android(?: (\d{1,4}))?")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("Windows", re.compile(r"Windows NT")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("Linux", re.compile(r"Linux|X11")),
)


@dataclass(frozen=True)
class Device:
    """The device a session signed in from, as :meth:`.PrancerSession.user_sessions`
    returns it in :attr:`.Record.device`."""

    #: The browser and its major version, such as ``"Firefox 128"``, or ``None``.
    browser: str | None
    #: The operating system, such as ``"Android 14"``, or ``None``.
    os: str | None
    #: The client's network, such as ``"203.0.113.0/24"``, or ``None``.
    network: str | None
    #: When the session signed in.
    signed_in_at: datetime
    #: When the session was last seen, within the configured interval.
    last_seen_at: datetime
    #: The raw ``User-Agent`` header, only if ``raw_user_agent`` is on.
    user_agent: str | None = None

    @classmethod
    def from_stored(cls, value: object) -> Device | None:
        """Return the device a stored description holds, or ``None`` for one
        that is missing or malformed."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                browser=_text_or_none(value.get("browser")),
                os=_text_or_none(value.get("os")),
                network=_text_or_none(value.get("network")),
                signed_in_at=datetime.fromtimestamp(float(value["signed_in_at"]), timezone.utc),
                last_seen_at=datetime.fromtimestamp(float(value["last_seen_at"]), timezone.utc),
                user_agent=_text_or_none(value.get("user_agent")),
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            return None


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def summarise_user_agent(header: str) -> tuple[str | None, str | None]:
    """Return the browser and operating system a ``User-Agent`` names, as
    short labels, or ``None`` for what it does not tell."""
    header = header[:MAX_USER_AGENT_LENGTH]
    browser = None
    for name, pattern in _BROWSERS:
        match = pattern.search(header)
        if match:
            browser = f"{name} {match.group(1)}"
            break
    system = None
    for name, pattern in _SYSTEMS:
        match = pattern.search(header)
        if match:
            version = match.group(1) if match.groups() else None
            system = f"{name} {version}" if version else name
            break
    return browser, system


def coarse_network(address: str | None) -> str | None:
    """Return the /24 of an IPv4 address or the /48 of an IPv6 one, as text:
    enough to tell home from abroad, not enough to find a house."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        # An address that carries the client's IPv4 one (mapped, 6to4,
        # Teredo) is as coarse as that one's /24.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo and ip.teredo[1])
        if embedded:
            ip = embedded
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(frozen=True)
class DeviceTracking:
    """How devices are described, from ``PRANCER_SESSION["devices"]``.

    :param network: record the client's coarse network.
    :param raw_user_agent: also record the ``User-Agent`` header as sent.
    :param last_seen_interval: seconds between two updates of the last-seen
        time; an update rides on a write or a touch the request makes anyway.
    """

    network: bool = True
    raw_user_agent: bool = False
    last_seen_interval: float = DEFAULT_LAST_SEEN_INTERVAL

    @classmethod
    def from_config(cls, value: object, key: str) -> DeviceTracking | None:
        """Read the ``devices`` setting: ``True``, ``False`` or a mapping of
        the options above.

        :raise ConfigurationError: naming the offending key.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, t.Mapping):
            raise ConfigurationError("must be true, false or a mapping of options", key)
        unknown = set(value) - {"network", "raw_user_agent", "last_seen_interval"}
        if unknown:
            raise ConfigurationError("unknown option", f"{key}.{sorted(unknown)[0]}")
        for flag in ("network", "raw_user_agent"):
            if not isinstance(value.get(flag, False), bool):
                raise ConfigurationError("must be true or false", f"{key}.{flag}")
        interval = value.get("last_seen_interval", DEFAULT_LAST_SEEN_INTERVAL)
        if (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not 0 < interval <= 86400
        ):
            raise ConfigurationError(
                "must be a positive number of seconds, at most a day", f"{key}.last_seen_interval"
            )
        return cls(
            network=value.get("network", True),
            raw_user_agent=value.get("raw_user_agent", False),
            last_seen_interval=float(interval),
        )

    def describe(self, request: Request, now: float) -> dict[str, t.Any]:
        """Return the description of the device sending ``request``, signing in now."""
        header = request.headers.get("User-Agent", "")
        browser, system = summarise_user_agent(header)
        description: dict[str, t.Any] = {
            "browser": browser,
            "os": system,
            "network": coarse_network(request.remote_addr) if self.network else None,
            "signed_in_at": now,
            "last_seen_at": now,
        }
        if self.raw_user_agent:
            description["user_agent"] = header[:MAX_USER_AGENT_LENGTH]
        return description

    def seen(self, description: object, now: float) -> dict[str, t.Any] | None:
        """Return ``description`` with its last-seen time moved to now, or
        ``None`` if it was moved less than the interval ago."""
        if not isinstance(description, dict):
            return None
        last = description.get("last_seen_at")
        if isinstance(last, (int, float)) and now - last < self.last_seen_interval:
            return None
        return {**description, "last_seen_at": now}
