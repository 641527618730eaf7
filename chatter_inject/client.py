"""Posting a message into a chatter node from Python: chatter-inject's protocol as a function.

    from chatter_inject.client import inject
    message_id, node = inject(("127.0.0.1", 8080), {"deploy": {"version": "1.2.3"}})

An ``inject`` datagram carries the payload and a request id; the node answers ``inject-ack``
(the message id and the node's name) or ``inject-nack`` (why it refused). UDP loses
datagrams, so the request is resent every ``retry`` seconds until an answer comes; the request
id makes a resend harmless (the node acknowledges the same message again).

A node started with ``--encrypt`` accepts only sealed datagrams: give the same key
(``encrypt="BASE64"``, or ``keyring_file=``) and ``label``. Each resend is sealed anew (a new
nonce and sequence number, else the node's replay window would refuse it), and only answers
that open with the key count. Without the key an encrypted node stays silent: the
TimeoutError says the node may require one.

Where nothing listens at all, the host answers ICMP port unreachable: on a socket that
reports it (:func:`report_refusals`, which ``inject`` applies to the socket it makes) that is
:class:`NotListening` at once rather than a TimeoutError after ``timeout``.
"""

from __future__ import annotations

import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from chatterd.core import wire
from chatterd.core.config import INJECT_MIN_DATAGRAM, INJECT_RETRY, INJECT_TIMEOUT
from chatterd.core.keyring import Keyring
from chatterd.core.seal import Sealer, SealError

Addr = tuple[str, int]


class Rejected(Exception):
    """The node refused the message (``inject-nack``); the text says why."""


class NotListening(ConnectionRefusedError):
    """Nothing listens at the address: its host answered ICMP port unreachable."""


# Linux's IP_RECVERR / IPV6_RECVERR (include/uapi/linux/in.h, in6.h); Python 3.11 names neither.
_RECVERR = {socket.AF_INET: (socket.IPPROTO_IP, 11), socket.AF_INET6: (socket.IPPROTO_IPV6, 25)}


def report_refusals(sock: socket.socket) -> bool:
    """Have ``sock`` report ICMP port unreachable (a ConnectionRefusedError from recv).

    A connected UDP socket reports it, but accepts datagrams only from the address it is
    connected to, and a node bound to a wildcard address (``0.0.0.0``, ``[::]``) answers from
    the address its routes choose: injecting to a secondary or virtual address of its host
    would then time out. So the socket stays unconnected and asks for the errors (Linux's
    IP_RECVERR). False where that is not available: the request then times out as before."""
    opt = _RECVERR.get(sock.family)
    if not sys.platform.startswith("linux") or opt is None:
        return False
    try:
        sock.setsockopt(opt[0], opt[1], 1)
    except OSError:
        return False
    return True


def request(payload: Any, hops: int | None = None) -> tuple[str, bytes]:
    """A new request id and the datagram carrying the payload."""
    rid = uuid.uuid4().hex
    data = wire.encode([wire.Inject(rid=rid, payload=payload, hops=hops)])
    room = INJECT_MIN_DATAGRAM - len(data) - len(',"pad":""')
    if room > 0:  # the node's answer to a stranger is at most what it sent (no reflection)
        data = wire.encode([wire.Inject(rid=rid, payload=payload, hops=hops, pad=" " * room)])
    return rid, data


NEEDS_KEY = "the node may require a key: --encrypt KEY, $CHATTER_ENCRYPT_KEY or --keyring-file"
WRONG_KEY = "the node may use another key or --label"


def sealer_for(
    encrypt: str | None = None, keyring_file: Path | None = None, label: str = "", keyring: Keyring | None = None
) -> Sealer | None:
    """The client's sealer from a key, a keyring file or a keyring; None for plaintext.
    Raises KeyringError (a ValueError) for a bad key or file."""
    from chatterd import keyfile

    if keyring is None:
        keyring, _ = keyfile.load_keyring(encrypt, keyring_file)  # a missing file is not created here
    if keyring is None:
        return None
    return keyfile.make_sealer(keyring, label, int(time.time() * 1000))


def send_until_acked(
    sock: socket.socket,
    data: bytes,
    target: Addr,
    rid: str,
    timeout: float,
    retry: float,
    sealer: Sealer | None = None,
) -> tuple[str, str]:
    """Send ``data`` to ``target`` every ``retry`` seconds until the node answers request
    ``rid``: returns (message id, node name). Raises Rejected, TimeoutError, NotListening
    (on a socket that reports refusals: see report_refusals) or OSError (send)."""
    deadline = time.monotonic() + timeout
    while True:
        sock.sendto(data if sealer is None else sealer.seal(data), target)
        retry_at = min(time.monotonic() + retry, deadline)
        while (left := retry_at - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                reply = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionRefusedError:
                # We send to nothing but target: the refusal is its host's, for our datagram.
                raise NotListening(f"nothing listens on {wire.format_addr(target)} (ICMP port unreachable)") from None
            except OSError:
                time.sleep(left)  # e.g. host unreachable, perhaps for a moment: the next round
                break
            try:
                dgram = wire.decode(reply if sealer is None else sealer.open(reply).body)
            except (wire.WireError, SealError):
                continue
            for msg in dgram.m:
                if isinstance(msg, wire.InjectAck) and msg.rid == rid:
                    return msg.id, msg.node
                if isinstance(msg, wire.InjectNack) and msg.rid == rid:
                    raise Rejected(msg.error)
        if time.monotonic() >= deadline:
            hint = NEEDS_KEY if sealer is None else WRONG_KEY
            raise TimeoutError(f"no acknowledgement within {timeout:g} s; {hint}")


def inject(
    target: Addr,
    payload: Any,
    *,
    hops: int | None = None,
    timeout: float = INJECT_TIMEOUT,
    retry: float = INJECT_RETRY,
    sock: socket.socket | None = None,
    encrypt: str | None = None,
    keyring_file: Path | None = None,
    label: str = "",
    keyring: Keyring | None = None,
) -> tuple[str, str]:
    """Post ``payload`` to the node at ``target``; (message id, node) once it acknowledged.
    ``encrypt`` (a base64 key), ``keyring_file`` or ``keyring``, with ``label``: for a node
    started with --encrypt. Raises KeyringError for a bad key; see send_until_acked for the
    rest (a ``sock`` of the caller's reports refusals only if report_refusals was applied)."""
    sealer = sealer_for(encrypt, keyring_file, label, keyring)
    rid, data = request(payload, hops)
    if sock is not None:
        return send_until_acked(sock, data, target, rid, timeout, retry, sealer)
    with socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET, socket.SOCK_DGRAM) as own:
        report_refusals(own)
        return send_until_acked(own, data, target, rid, timeout, retry, sealer)
