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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import typing as t

from .errors import ConfigurationError

#: Sealed values start with this, so they are told apart from plain ones.
PREFIX = "e1."
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12


class Encryptor:
    """Seal and open session values with AES-GCM under a list of keys.

    :param keys: 32-byte keys, raw or in URL-safe base64; the first seals.
    :raise ConfigurationError: for a missing or malformed key, or without
        ``cryptography``.
    """

    def __init__(self, keys: t.Sequence[str | bytes]) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as error:
            raise ConfigurationError(
                "needs cryptography: pip install 'flask-prancer-session[encryption]'", "keys"
            ) from error
        if isinstance(keys, (str, bytes)) or not isinstance(keys, t.Sequence) or not keys:
            raise ConfigurationError("must be a list of one or more keys", "keys")
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

        :raise ValueError: if it is not sealed by one of the keys for ``name``.
        """
        if not token.startswith(PREFIX):
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
    if isinstance(key, str):
        try:
            key = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
        except (binascii.Error, ValueError):
            raise ConfigurationError("must be 32 bytes in URL-safe base64", option) from None
    if not isinstance(key, bytes) or len(key) != 32:
        raise ConfigurationError(
            "must be 32 random bytes, or their URL-safe base64"
            " (python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            option,
        )
    return key
