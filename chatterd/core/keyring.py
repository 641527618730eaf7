"""The keys a node seals and opens gossip with, like memberlist's keyring.go.

A :class:`Keyring` is an ordered list of AEAD keys (AES-GCM, 16, 24 or 32 bytes, written as
base64). The first, the *primary*, seals everything the node sends; every key opens. Each key
has a 4-byte id (the start of its SHA-256), carried in the clear in each sealed datagram, so
that a receiver tries only the matching key. Keys change at run time (install, use, remove:
the later ``chatterd keys`` operations); whoever must persist the ring (the shell's keyring
file) registers ``on_change``. Pure computation: no file, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chatterd.core.config import KEY_SIZES, MAX_KEYS

KEY_ID_SIZE = 4


class KeyringError(ValueError):
    """A key that cannot be used, or an operation the keyring refuses; the text says why."""


def parse_key(text: str) -> bytes:
    """Base64 of 16, 24 or 32 bytes → the key. Raises KeyringError."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError("invalid key: not base64") from None
    if len(key) not in KEY_SIZES:
        raise KeyringError(f"invalid key: {len(key)} bytes, expected 16, 24 or 32 (base64, e.g. from chatterd keygen)")
    return key


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:KEY_ID_SIZE]


class Keyring:
    """Keys in order, the primary first; ``by_id`` maps a key id to its cipher."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        self.on_change: Callable[[Keyring], None] | None = None
        for k in keys:
            self._add(k)
        if not self._keys:
            raise KeyringError("a keyring needs at least one key")

    @classmethod
    def from_text(cls, keys: Iterable[str]) -> Keyring:
        return cls(parse_key(k) for k in keys)

    def _add(self, key: bytes) -> bool:
        if len(key) not in KEY_SIZES:
            raise KeyringError(f"invalid key: {len(key)} bytes, expected 16, 24 or 32")
        kid = key_id(key)
        if kid in self._ciphers:
            if key in self._keys:
                return False
            raise KeyringError("two keys with the same key id")  # 2^-32: in practice never
        if len(self._keys) >= MAX_KEYS:
            raise KeyringError(f"the keyring is full ({MAX_KEYS} keys): remove one first")
        self._keys.append(key)
        self._ciphers[kid] = AESGCM(key)
        return True

    @property
    def keys(self) -> list[bytes]:
        return list(self._keys)

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    @property
    def primary_id(self) -> bytes:
        return key_id(self._keys[0])

    def primary_cipher(self) -> tuple[bytes, AESGCM]:
        kid = key_id(self._keys[0])
        return kid, self._ciphers[kid]

    def cipher(self, kid: bytes) -> AESGCM | None:
        return self._ciphers.get(kid)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    # ------------------------------------------------------------------ operations

    def install(self, key: bytes) -> bool:
        """Add a key that opens (not yet the primary). False if it was there already."""
        added = self._add(key)
        if added:
            self._changed()
        return added

    def use(self, key: bytes) -> bool:
        """Make an installed key the primary. False if it was already; KeyringError if not installed."""
        if key not in self._keys:
            raise KeyringError("key not installed: install it first")
        if self._keys[0] == key:
            return False
        self._keys.remove(key)
        self._keys.insert(0, key)
        self._changed()
        return True

    def remove(self, key: bytes) -> bool:
        """Remove a key; the primary cannot be removed. False if it was not there."""
        if key not in self._keys:
            return False
        if self._keys[0] == key:
            raise KeyringError("refused: this key is the primary (in use); use another key first")
        self._keys.remove(key)
        del self._ciphers[key_id(key)]
        self._changed()
        return True

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)
