"""Session values encrypted before they reach the store.

.. code-block:: python

    app.config["PRANCER_SESSION"] = {
        "store": {...},
        "encryption": {"keys": [os.environ["SESSION_KEY"], os.environ["OLD_SESSION_KEY"]]},
    }

Each value is sealed with AES-256-GCM under the first key, with the session
key's name as associated data, so a value cannot be read, altered or moved to
another name without the key. Values sealed with any listed key are read, so
keys rotate by putting a new one first and running ``flask session rekey``.
A stolen backup or snapshot of the store then holds neither usable session ids
(stores only see their SHA-256) nor readable data. Key names, times and the
user a session is bound to (for "log out everywhere") stay readable.

Keys are 32 random bytes in URL-safe base64 (``python -c "import secrets;
print(secrets.token_urlsafe(32))"``). Needs the ``encryption`` extra
(``cryptography``).

With ``accept_plaintext``, values stored in the clear before encryption was
turned on are read until ``rekey`` has sealed them, so turning encryption on
logs nobody out; turn it off once ``rekey`` has run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import typing as t

from .errors import ConfigurationError

#: Sealed values start with this, so they are told apart from plain ones.
PREFIX = "e1."
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
#: 32 random bytes have about 30 different values; fewer than this many means
#: the key was typed or derived, not drawn from a random generator (the odds
#: of a random key having so few are below one in 10**14).
MIN_DISTINCT_KEY_BYTES = 16
_KEY_TEXT = re.compile(r"[A-Za-z0-9_-]{43}=?")


class Encryptor:
    """Seal and open session values with AES-GCM under a list of keys.

    :param keys: 32-byte keys, raw or in URL-safe base64; the first seals.
    :param accept_plaintext: read values stored in the clear as they are,
        while ``flask session rekey`` has not sealed them yet.
    :raise ConfigurationError: for a missing or malformed key, or without
        ``cryptography``.
    """

    def __init__(self, keys: t.Sequence[str | bytes], *, accept_plaintext: bool = False) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as error:
            raise ConfigurationError(
                "needs cryptography: pip install 'flask-prancer-session[encryption]'", "keys"
            ) from error
        if isinstance(keys, (str, bytes)) or not isinstance(keys, t.Sequence) or not keys:
            raise ConfigurationError("must be a list of one or more keys", "keys")
        if not isinstance(accept_plaintext, bool):
            raise ConfigurationError("must be true or false", "accept_plaintext")
        #: Whether values stored in the clear are read as they are.
        self.accept_plaintext = accept_plaintext
        self._ciphers: dict[bytes, t.Any] = {}
        self._current = b""
        for index, key in enumerate(keys):
            raw = _key_bytes(key, f"keys.{index}")
            key_id = hashlib.sha256(raw).digest()[:_KEY_ID_BYTES]
            self._ciphers.setdefault(key_id, AESGCM(raw))
            if index == 0:
                self._current = key_id

    def seal(self, value: str, name: str) -> str:
        """Return ``value`` (of the session key ``name``) sealed under the first key."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self._current].encrypt(nonce, value.encode(), name.encode())
        return PREFIX + base64.urlsafe_b64encode(self._current + nonce + sealed).decode("ascii")

    def open(self, token: str, name: str) -> str:
        """Return the value ``token`` seals.

        :raise ValueError: if it is not sealed by one of the keys for ``name``
            (and is not a plain value that :attr:`accept_plaintext` lets in).
        """
        if not token.startswith(PREFIX):
            # Serialised values never start with the prefix: this one was
            # stored before encryption was turned on.
            if self.accept_plaintext:
                return token
            raise ValueError("the value is not encrypted")
        try:
            raw = base64.urlsafe_b64decode(token[len(PREFIX) :])
        except (binascii.Error, ValueError) as error:
            raise ValueError("the value is not valid base64") from error
        key_id, nonce = raw[:_KEY_ID_BYTES], raw[_KEY_ID_BYTES : _KEY_ID_BYTES + _NONCE_BYTES]
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise ValueError("the value is sealed with a key that is not configured")
        from cryptography.exceptions import InvalidTag

        try:
            opened: bytes = cipher.decrypt(
                nonce, raw[_KEY_ID_BYTES + _NONCE_BYTES :], name.encode()
            )
        except InvalidTag as error:
            raise ValueError("the value was altered, or sealed for another key") from error
        return opened.decode()

    def is_current(self, token: str) -> bool:
        """Tell whether ``token`` is sealed under the first key (``rekey`` skips it)."""
        if not token.startswith(PREFIX):
            return False
        try:
            raw = base64.urlsafe_b64decode(token[len(PREFIX) : len(PREFIX) + 8])
        except (binascii.Error, ValueError):
            return False
        return raw[:_KEY_ID_BYTES] == self._current


def _key_bytes(key: object, option: str) -> bytes:
    """Return the 32 bytes of ``key``, decoding its base64 strictly: a key with
    stray characters is a mistake that would otherwise go unseen."""
    if isinstance(key, str):
        if _KEY_TEXT.fullmatch(key) is None:
            raise ConfigurationError(
                f"must be 32 bytes in URL-safe base64 (43 characters of A-Z, a-z, 0-9, '-'"
                f" and '_'), not {len(key)} characters",
                option,
            )
        text = key.rstrip("=")
        try:
            key = base64.urlsafe_b64decode(text + "=")
        except (binascii.Error, ValueError):
            raise ConfigurationError("must be 32 bytes in URL-safe base64", option) from None
        if base64.urlsafe_b64encode(key).decode("ascii").rstrip("=") != text:
            # The last character carries bits past the 32 bytes.
            raise ConfigurationError("is not canonical URL-safe base64", option)
    if not isinstance(key, bytes) or len(key) != 32:
        raise ConfigurationError(
            "must be 32 random bytes, or their URL-safe base64"
            " (python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            option,
        )
    if len(set(key)) < MIN_DISTINCT_KEY_BYTES:
        raise ConfigurationError(
            "is not random: make one with"
            " python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            option,
        )
    return key
