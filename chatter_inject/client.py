"""Posting a message into a chatter node from Python: chatter-inject's protocol as a function.

    from chatter_inject.client import inject
    message_id, node = inject(("127.0.0.1", 8080), {"deploy": {"version": "1.2.3"}})

An ``inject`` datagram carries the payload and a request id; the node answers ``inject-ack``
(the message id and the node's name) or ``inject-nack`` (why it refused). UDP loses
datagrams, so the request is resent every ``retry`` seconds until an answer comes; the request
id makes a resend harmless (the node acknowledges the same message again).
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

from chatterd.core import wire
from chatterd.core.config import INJECT_MIN_DATAGRAM, INJECT_RETRY, INJECT_TIMEOUT

Addr = tuple[str, int]


class Rejected(Exception):
    """The node refused the message (``inject-nack``); the text says why."""


def request(payload: Any, hops: int | None = None) -> tuple[str, bytes]:
    """A new request id and the datagram carrying the payload."""
    rid = uuid.uuid4().hex
    data = wire.encode([wire.Inject(rid=rid, payload=payload, hops=hops)])
    room = INJECT_MIN_DATAGRAM - len(data) - len(',"pad":""')
    if room > 0:  # the node's answer to a stranger is at most what it sent (no reflection)
        data = wire.encode([wire.Inject(rid=rid, payload=payload, hops=hops, pad=" " * room)])
    return rid, data


def send_until_acked(
    sock: socket.socket, data: bytes, target: Addr, rid: str, timeout: float, retry: float
) -> tuple[str, str]:
    """Send ``data`` to ``target`` every ``retry`` seconds until the node answers request
    ``rid``: returns (message id, node name). Raises Rejected, TimeoutError or OSError (send)."""
    deadline = time.monotonic() + timeout
    while True:
        sock.sendto(data, target)
        retry_at = min(time.monotonic() + retry, deadline)
        while (left := retry_at - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                reply = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionRefusedError:
                time.sleep(left)  # nothing listening there (yet): try again at the next round
                break
            try:
                dgram = wire.decode(reply)
            except wire.WireError:
                continue
            for msg in dgram.m:
                if isinstance(msg, wire.InjectAck) and msg.rid == rid:
                    return msg.id, msg.node
                if isinstance(msg, wire.InjectNack) and msg.rid == rid:
                    raise Rejected(msg.error)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no acknowledgement within {timeout:g} s")


def inject(
    target: Addr,
    payload: Any,
    *,
    hops: int | None = None,
    timeout: float = INJECT_TIMEOUT,
    retry: float = INJECT_RETRY,
    sock: socket.socket | None = None,
) -> tuple[str, str]:
    """Post ``payload`` to the node at ``target``; (message id, node) once it acknowledged."""
    rid, data = request(payload, hops)
    if sock is not None:
        return send_until_acked(sock, data, target, rid, timeout, retry)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as own:
        return send_until_acked(own, data, target, rid, timeout, retry)
