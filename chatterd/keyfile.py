"""The shell's side of sealed gossip: keys from --encrypt / $CHATTER_ENCRYPT_KEY and the
keyring file, the file written back when the keyring changes, and the node's randomness.

The keyring file (``--keyring-file PATH``) is a JSON list of base64 keys, the primary first,
like Serf's ``keyring_file``. It is read at start and, once the node runs, replaced
atomically (temporary file with mode 0600, fsync, rename) whenever the keyring changes
(:meth:`Keyring.install`, ``use``, ``remove``: the later ``chatterd keys`` operations call
them). A file that others may read is refused: a key in it lets anyone forge membership.
When the file does not exist yet, ``--encrypt`` seeds it; when it exists it wins and
``--encrypt`` is ignored (Serf's rule), so a restart keeps a rotated ring.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import stat
from pathlib import Path

from chatterd.atomicfile import replace_private
from chatterd.core.config import MAX_LABEL
from chatterd.core.keyring import Keyring, KeyringError, encode_key, parse_key
from chatterd.core.seal import Sealer, boot_id

MAX_KEYRING_FILE = 64 * 1024  # a few hundred keys; a bigger file is not a keyring

ACCEPTS_PLAINTEXT_WARNING = (
    "this node accepts plaintext gossip (--no-encrypt-verify-incoming): anyone who can reach the port "
    "can forge membership until every node seals and is restarted without it"
)

PLAINTEXT_WARNING = (
    "gossip is not encrypted and this node listens beyond loopback: anyone who can reach the port "
    "can forge membership (start every node with --encrypt KEY or --keyring-file; chatterd keygen)"
)


def generate_key() -> str:
    """A new random key (32 bytes: AES-256), base64, for ``chatterd keygen``."""
    return encode_key(secrets.token_bytes(32))


def from_options(encrypt: str | None, path: Path | None, label: str) -> Keyring | None:
    """The keyring from --encrypt, --keyring-file and --label, the file created if it was
    missing; None for plaintext. Raises KeyringError (bad usage) or OSError (cannot write)."""
    if len(label.encode()) > MAX_LABEL:
        raise KeyringError(f"--label: longer than {MAX_LABEL} bytes")
    try:
        ring, new = load_keyring(encrypt, path)
    except KeyringError as e:
        raise KeyringError(f"{'--encrypt' if path is None else '--keyring-file'}: {e}") from None
    if ring is None and label:
        raise KeyringError("--label needs --encrypt or --keyring-file")
    if new and ring is not None and path is not None:
        try:
            save_keyring(path, ring)
        except OSError as e:
            raise OSError(e.errno, f"cannot write keyring file {path}: {e.strerror}") from None
    return ring


def load_keyring(encrypt: str | None, path: Path | None) -> tuple[Keyring | None, bool]:
    """(the keyring, whether the file must be written) from --encrypt and --keyring-file.
    None without either. Raises KeyringError with a text for the user."""
    key = parse_key(encrypt) if encrypt else None
    if path is None:
        return (Keyring([key]) if key is not None else None), False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the start
    except FileNotFoundError:
        if key is None:
            raise KeyringError(f"keyring file {path} does not exist: give --encrypt KEY to create it") from None
        return Keyring([key]), True
    except OSError as e:
        raise KeyringError(f"cannot read keyring file {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        return _read(path, f.fileno()), False


def _read(path: Path, fd: int) -> Keyring:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise KeyringError(f"keyring file {path} is not a regular file")
    if st.st_mode & 0o007:
        mode = st.st_mode & 0o777
        raise KeyringError(f"keyring file {path} is readable by other users (mode {mode:o}): chmod 600 it")
    if st.st_size > MAX_KEYRING_FILE:
        raise KeyringError(f"keyring file {path} is too big ({st.st_size} bytes)")
    try:
        keys = json.loads(os.read(fd, MAX_KEYRING_FILE + 1))
    except (OSError, ValueError) as e:
        raise KeyringError(f"keyring file {path} is not a JSON list of base64 keys: {e}") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or not keys:
        raise KeyringError(f"keyring file {path} must be a non-empty JSON list of base64 keys")
    try:
        return Keyring.from_text(keys)
    except KeyringError as e:
        raise KeyringError(f"keyring file {path}: {e}") from None


def save_keyring(path: Path, ring: Keyring) -> None:
    """Replace the keyring file atomically, mode 0600. Raises OSError."""
    data = (json.dumps([encode_key(k) for k in ring.keys]) + "\n").encode()
    replace_private(path, data)


def make_sealer(ring: Keyring, label: str, start: int, *, outgoing: bool = True, incoming: bool = True) -> Sealer:
    """A sealer with fresh randomness (salt, counter start, boot id); ``start`` is the node's
    first incarnation (it grows from one boot to the next, even across clock steps when
    --data-dir keeps it) or, for a client, the wall clock in ms."""
    return Sealer(
        ring,
        label,
        salt=secrets.token_bytes(4),
        counter=secrets.randbits(62),
        boot=boot_id(start, secrets.randbits(16)),
        outgoing=outgoing,
        incoming=incoming,
    )


def beyond_loopback(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"  # a host name: assume it is reachable from elsewhere


class Security:
    """What the runtime needs of the above: the sealer of its node, the keyring file kept in
    step with the keyring, the plaintext warning, and the health fields."""

    def __init__(
        self, ring: Keyring | None, path: Path | None, label: str, *, outgoing: bool = True, incoming: bool = True
    ) -> None:
        self.keyring = ring
        self.path = path
        self.label = label
        # The rolling move from plaintext (memberlist's verify-outgoing / verify-incoming).
        self.outgoing = outgoing
        self.incoming = incoming
        self.warnings: list[str] = []
        if ring is not None and not incoming:
            self.warnings.append(ACCEPTS_PLAINTEXT_WARNING)
        if ring is not None and path is not None:
            ring.on_change = lambda r: self.save()

    def save(self) -> None:
        """Write the keyring file (the keyring changed). Raises KeyringError: the change is
        made in memory, and the keyring operation reports that the file was not written."""
        if self.keyring is not None and self.path is not None:
            try:
                save_keyring(self.path, self.keyring)
            except OSError as e:
                raise KeyringError(f"changed, but the keyring file {self.path} could not be written: {e}") from None

    def sealer(self, start: int) -> Sealer | None:
        if self.keyring is None:
            return None
        return make_sealer(self.keyring, self.label, start, outgoing=self.outgoing, incoming=self.incoming)

    def check_listen(self, host: str) -> str | None:
        """The plaintext warning if gossip is not encrypted and ``host`` is beyond loopback."""
        if self.keyring is None and beyond_loopback(host):
            self.warnings = [PLAINTEXT_WARNING]
            return PLAINTEXT_WARNING
        return None

    def mode(self) -> str:
        """How gossip goes: ``plaintext`` (no key), ``sealed`` (the default with a key), or a
        phase of the rolling move: ``send-plaintext`` (phase 1: the key, plaintext sent, both
        accepted), ``accept-plaintext`` (phase 2: sealed sent, both accepted)."""
        if self.keyring is None:
            return "plaintext"
        if self.incoming:
            return "sealed"
        return "accept-plaintext" if self.outgoing else "send-plaintext"

    def health(self) -> dict[str, object]:
        out: dict[str, object] = {
            "encryption": "on" if self.keyring is not None else "off",
            "encryption_mode": self.mode(),
            "warnings": self.warnings,
        }
        if self.keyring is not None:
            out["keys"] = len(self.keyring)
            out["label"] = self.label
        return out


def check_modes(ring: Keyring | None, outgoing: bool, incoming: bool) -> None:
    """The verify flags make sense: they need a key, and a node that sends plaintext must
    accept plaintext (its peers in phase 1 send it too). Raises KeyringError."""
    if ring is None and not (outgoing and incoming):
        raise KeyringError("--no-encrypt-verify-outgoing/-incoming need --encrypt or --keyring-file")
    if incoming and not outgoing:
        raise KeyringError("--no-encrypt-verify-outgoing needs --no-encrypt-verify-incoming (phase 1 takes both)")
