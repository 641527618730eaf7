"""Sealing of datagrams: AES-GCM with the keyring's primary key, the cluster label as
associated data, and a replay window per sender boot (memberlist's security.go, plus the
replay protection Serf leaves out).

A sealed datagram (a plaintext one is JSON and starts with ``{``)::

    version 0x02 (1) | key id (4) | nonce (12) | AES-GCM( boot id (8) | JSON datagram ) + tag (16)

The version byte and the key id, followed by the label, are the associated data: a datagram
sealed with the same key for a cluster with another label does not open. The nonce is a
per-boot random salt (4 bytes) and a counter (8 bytes) that starts at a random value and
grows by one per datagram, so a nonce never repeats within a boot, and across boots only if
both the salt and the counter ranges collide. The counter is also the datagram's sequence
number: with the boot id (the sender's start, ordered: see :func:`boot_id`) it lets the
receiver refuse a datagram it accepted before (:class:`ReplayGuard`), once the JSON inside
says who sent it. The shell gives the randomness (salt, counter start, boot id); this module
only computes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from chatterd.core.config import REPLAY_MAX_CLIENTS, REPLAY_MAX_NODES, REPLAY_WINDOW, SEAL_OVERHEAD
from chatterd.core.keyring import KEY_ID_SIZE, Keyring

VERSION = 0x02
SEALED_PREFIX = bytes([VERSION])
SALT_SIZE = 4
NONCE_SIZE = 12
BOOT_SIZE = 8
TAG_SIZE = 16
HEADER_SIZE = 1 + KEY_ID_SIZE + NONCE_SIZE
assert HEADER_SIZE + BOOT_SIZE + TAG_SIZE == SEAL_OVERHEAD
MAX_SEQ = 2**64 - 1
MAX_BOOT = 2**63 - 1


class SealError(Exception):
    """A datagram that does not open; ``reason`` is counted under ``counter``."""

    def __init__(self, reason: str, counter: str = "decrypt_failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.counter = counter


def boot_id(start: int, rand16: int) -> int:
    """A sender's boot id: its start (the node's first incarnation, or the wall clock in ms:
    both grow from one boot to the next) above 16 random bits, kept in 63 bits."""
    return ((start & (2**47 - 1)) << 16) | (rand16 & 0xFFFF)


def is_sealed(data: bytes) -> bool:
    return data[:1] == SEALED_PREFIX


@dataclass(frozen=True)
class Opened:
    boot: int
    seq: int
    body: bytes  # the JSON datagram
    kid: bytes = b""  # the id of the key it was sealed with


class Sealer:
    """Seals what one sender sends; opens what it receives (with its keyring and label).

    ``outgoing`` / ``incoming`` leave room for a rolling move from plaintext: a node that
    seals but still accepts plaintext (incoming False), then one that requires seals."""

    def __init__(
        self,
        keyring: Keyring,
        label: str = "",
        *,
        salt: bytes,
        counter: int,
        boot: int,
        outgoing: bool = True,
        incoming: bool = True,
    ) -> None:
        if len(salt) != SALT_SIZE:
            raise ValueError(f"salt must be {SALT_SIZE} bytes")
        if not 0 <= boot <= MAX_BOOT:
            raise ValueError("boot id out of range")
        self.keyring = keyring
        self.label = label
        self._aad_tail = label.encode("utf-8")
        self.salt = salt
        self._seq = counter % 2**62  # room for 2^62 datagrams before the counter could wrap
        self.boot = boot
        self._boot_bytes = boot.to_bytes(BOOT_SIZE, "big")
        self.outgoing = outgoing
        self.incoming = incoming
        self.replay = ReplayGuard()
        # Answer in kind: the key each address last sealed to us with (see reply_key).
        self._replies: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self.max_replies = REPLAY_MAX_NODES + REPLAY_MAX_CLIENTS

    def seal(self, body: bytes, kid: bytes | None = None) -> bytes:
        """Seal with the key ``kid`` if we hold it, else with the primary."""
        aead = self.keyring.cipher(kid) if kid is not None else None
        if aead is None or kid is None:
            kid, aead = self.keyring.primary_cipher()
        seq = self._seq
        self._seq = seq + 1
        header = SEALED_PREFIX + kid
        nonce = self.salt + seq.to_bytes(8, "big")
        return header + nonce + aead.encrypt(nonce, self._boot_bytes + body, header + self._aad_tail)

    def open(self, data: bytes) -> Opened:
        """Authenticate and decrypt, or raise SealError. Nothing of ``data`` is parsed
        before it authenticates but its key id."""
        if not is_sealed(data):
            if data[:1] == b"{":
                raise SealError("plaintext", "plaintext_refused")
            raise SealError("version")
        if len(data) < SEAL_OVERHEAD:
            raise SealError("truncated")
        kid = data[1 : 1 + KEY_ID_SIZE]
        aead = self.keyring.cipher(kid)
        if aead is None:
            raise SealError("unknown_key")
        nonce = data[1 + KEY_ID_SIZE : HEADER_SIZE]
        try:
            inner = aead.decrypt(nonce, data[HEADER_SIZE:], data[: 1 + KEY_ID_SIZE] + self._aad_tail)
        except InvalidTag:
            raise SealError("auth") from None
        boot = int.from_bytes(inner[:BOOT_SIZE], "big")
        return Opened(boot, int.from_bytes(nonce[SALT_SIZE:], "big"), inner[BOOT_SIZE:], kid)

    def heard(self, addr: tuple[str, int], kid: bytes) -> None:
        """A datagram from ``addr``, sealed with ``kid``, was accepted. (The common case, the
        same key again, costs one lookup; the oldest entries go first, and come back with
        their sender's next datagram.)"""
        replies = self._replies
        if replies.get(addr) != kid:
            replies.pop(addr, None)
            replies[addr] = kid
            if len(replies) > self.max_replies:
                replies.popitem(last=False)

    def reply_key(self, addr: tuple[str, int]) -> bytes | None:
        """The key ``addr`` last sealed to us with, if we still hold it: what it surely opens.
        A node that rejoins with an older key of the ring (it was down during a rotation), or a
        client with one, hears back in that key; a node that still sends plaintext (the rolling
        move) answers a sealed datagram sealed."""
        kid = self._replies.get(addr)
        return kid if kid is not None and self.keyring.cipher(kid) is not None else None

    def accept(self, sender: str | None, opened: Opened) -> str | None:
        """Record an opened datagram from ``sender`` (the name inside; None for a client such
        as chatter-inject). None if it is new, else why it is refused (a replay)."""
        return self.replay.check(sender, opened.boot, opened.seq)


class _Window:
    """The sequence numbers seen of one boot: the highest, and a bitmap of the ones below."""

    __slots__ = ("bits", "boot", "top")

    def __init__(self, boot: int, seq: int) -> None:
        self.boot = boot
        self.top = seq
        self.bits = 1

    def check(self, seq: int) -> str | None:
        if seq > self.top:
            shift = seq - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1) if shift < REPLAY_WINDOW else 1
            self.top = seq
            return None
        off = self.top - seq
        if off >= REPLAY_WINDOW:
            return "too_old"
        if (self.bits >> off) & 1:
            return "duplicate"
        self.bits |= 1 << off
        return None


class ReplayGuard:
    """Replay windows: one per named sender (its latest boot; an older boot is refused), and
    one per boot of unnamed clients. Both bounded, least recently heard forgotten first; when
    a client's window is forgotten, every boot up to its own is refused from then on."""

    def __init__(self, max_nodes: int = REPLAY_MAX_NODES, max_clients: int = REPLAY_MAX_CLIENTS) -> None:
        self.nodes: OrderedDict[str, _Window] = OrderedDict()
        self.clients: OrderedDict[int, _Window] = OrderedDict()
        self.client_floor = -1
        self.max_nodes = max_nodes
        self.max_clients = max_clients

    def check(self, sender: str | None, boot: int, seq: int) -> str | None:
        if sender is None:
            return self._check_client(boot, seq)
        w = self.nodes.get(sender)
        if w is None or boot > w.boot:
            self.nodes[sender] = _Window(boot, seq)
            self.nodes.move_to_end(sender)
            if len(self.nodes) > self.max_nodes:
                self.nodes.popitem(last=False)
            return None
        if boot < w.boot:
            return "old_boot"
        self.nodes.move_to_end(sender)
        return w.check(seq)

    def _check_client(self, boot: int, seq: int) -> str | None:
        w = self.clients.get(boot)
        if w is not None:
            self.clients.move_to_end(boot)
            return w.check(seq)
        if boot <= self.client_floor:
            return "old_boot"
        self.clients[boot] = _Window(boot, seq)
        if len(self.clients) > self.max_clients:
            old, _ = self.clients.popitem(last=False)
            self.client_floor = max(self.client_floor, old)
        return None
