"""chatter-inject: post one JSON message into a chatter node.

    chatter-inject 127.0.0.1:8080 '{"DebugMessage":{"text":"hello world"}}'
    echo '{"DebugMessage":{"text":"hi"}}' | chatter-inject 127.0.0.1:8080

The node acknowledges what it accepted; chatter-inject retries until it gets the
acknowledgement (UDP loses packets) and prints the message id and the node that accepted
it. ``--no-wait`` sends once and prints the message id it sent. Nothing listening on the
port (ICMP port unreachable) fails at once. Any problem: one line on stderr, non-zero exit.
For a node started with ``--encrypt``: the same ``--encrypt KEY`` (or ``$CHATTER_ENCRYPT_KEY``,
or ``--keyring-file``) and ``--label``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

from chatter_inject import client
from chatterd.cliargs import EXIT_USAGE, Parser, add_version, positive_float
from chatterd.core import payloads, wire
from chatterd.core.config import ENCRYPT_KEY_ENV, INJECT_RETRY, INJECT_TIMEOUT, LAN, SEAL_OVERHEAD
from chatterd.core.keyring import KeyringError
from chatterd.core.seal import Sealer

# EXIT_USAGE (2): bad arguments or bad message, nothing was sent
EXIT_FAILED = 1  # sent, but not accepted (no acknowledgement, or rejected by the node)

_DEVICE = "541b10e7-d13a-45e8-8567-7d450ce86603"
_EXAMPLES = [  # one of each of chatter-rs's kinds, and a user message
    {"DebugMessage": {"text": "hello world"}},
    {"DeviceGossip": {"DeviceAdded": {"origin": _DEVICE, "name": "gw", "description": "router"}}},
    {"DeviceGossip": {"DeviceRemoved": {"origin": _DEVICE, "name": "gw"}}},
    {"ViewGossip": {"ServerAdded": {"uuid": "0f6d3e2a-5b8c-4d1e-9a7f-2c4b6d8e0a13", "addr": "10.0.0.5:8080"}}},
]
EPILOG = "\n".join(
    [
        "payloads (chatter-rs's kinds, checked field by field, or any other JSON object):",
        *(f"  chatter-inject 127.0.0.1:8080 '{json.dumps(e, separators=(',', ':'))}'" for e in _EXAMPLES),
        """  echo '{"deploy":{"version":"1.2.3"}}' | chatter-inject 127.0.0.1:8080""",
        "",
        "output: MESSAGE_ID NODE once the node acknowledged; with --no-wait, MESSAGE_ID",
        "",
        "exit status:",
        "  0  accepted (with --no-wait: sent)",
        f"  {EXIT_FAILED}  not accepted: rejected by the node, nothing listens on the port, or no",
        "     acknowledgement within --timeout (a node with --encrypt needs the key)",
        f"  {EXIT_USAGE}  bad address, option, JSON or message, or over the size limit: nothing was sent",
    ]
)

STDIN_HINT = "chatter-inject: reading the message (JSON) from stdin; end it with Ctrl-D, or give it as an argument"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="chatter-inject",
        description="Post one JSON message into a chatter node over UDP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("addr", metavar="ADDR", help="UDP address of the node, HOST:PORT")
    p.add_argument("json", nargs="?", metavar="JSON", help="the message; read from stdin when omitted")
    add_version(p)
    p.add_argument(
        "--no-wait", action="store_true", help="send once and print the message id; do not wait for the acknowledgement"
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=INJECT_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to wait for the acknowledgement (default: {INJECT_TIMEOUT:g})",
    )
    p.add_argument(
        "--retry",
        type=positive_float,
        default=INJECT_RETRY,
        metavar="SECONDS",
        help=f"seconds between retries (default: {INJECT_RETRY:g})",
    )
    p.add_argument(
        "--hops",
        type=int,
        default=None,
        metavar="N",
        help="hop budget (default: chosen by the node from the cluster size)",
    )
    p.add_argument(
        "--max-datagram",
        type=int,
        default=LAN.max_datagram,
        metavar="BYTES",
        help=f"size limit of the datagram (default: {LAN.max_datagram})",
    )
    p.add_argument(
        "--encrypt",
        default=os.environ.get(ENCRYPT_KEY_ENV) or None,
        metavar="KEY",
        help=f"the cluster's key, for a node started with --encrypt (default: ${ENCRYPT_KEY_ENV})",
    )
    p.add_argument("--keyring-file", type=Path, default=None, metavar="PATH", help="the node's keyring file")
    p.add_argument("--label", default="", metavar="NAME", help="the cluster's --label (default: none)")
    return p


def fail(code: int, message: str) -> NoReturn:
    print(f"chatter-inject: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        addr = wire.parse_addr(args.addr)
    except ValueError as e:
        fail(EXIT_USAGE, str(e))
    text = args.json if args.json is not None else _read_stdin()
    try:
        payload: Any = json.loads(text)
    except json.JSONDecodeError as e:
        fail(EXIT_USAGE, f"invalid JSON: {e}")
    except RecursionError:
        fail(EXIT_USAGE, "invalid JSON: nested too deeply")
    try:
        payloads.validate(payload)
        if wire.depth(payload) > LAN.max_payload_depth:
            raise payloads.PayloadError(f"payload nesting deeper than {LAN.max_payload_depth}")
    except payloads.PayloadError as e:
        fail(EXIT_USAGE, f"invalid message: {e}")
    if args.hops is not None and args.hops < 0:
        fail(EXIT_USAGE, "--hops must be >= 0")
    try:
        sealer = client.sealer_for(args.encrypt, args.keyring_file, args.label)
    except KeyringError as e:
        fail(EXIT_USAGE, f"{'--encrypt' if args.keyring_file is None else '--keyring-file'}: {e}")
    rid, data = client.request(payload, args.hops)
    limit = wire.max_message_size(args.max_datagram - (SEAL_OVERHEAD if sealer is not None else 0))
    if len(data) > limit:
        fail(EXIT_USAGE, f"message too large: {len(data)} bytes encoded, limit {limit}")
    try:
        infos = socket.getaddrinfo(addr[0], addr[1], 0, socket.SOCK_DGRAM)  # IPv4 or IPv6
    except OSError as e:
        fail(EXIT_USAGE, f"cannot resolve {args.addr}: {e.strerror or e}")
    family, sockaddr = infos[0][0], infos[0][4]
    target = (str(sockaddr[0]), int(sockaddr[1]))
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if args.no_wait:
            try:
                sock.sendto(data if sealer is None else sealer.seal(data), target)
            except OSError as e:
                fail(EXIT_FAILED, f"cannot send to {args.addr}: {e.strerror or e}")
            print(rid)  # the message id, unless the node has one by that id already (never by chance)
            return 0
        client.report_refusals(sock)  # nothing listening: fail at once, not after --timeout
        return _send_until_acked(sock, data, target, rid, args, sealer)


def _read_stdin() -> str:
    """The message from stdin; on a terminal, say so first (else it looks like a hang)."""
    try:
        if sys.stdin.isatty():
            print(STDIN_HINT, file=sys.stderr)
    except ValueError:  # stdin closed
        pass
    return sys.stdin.read()


def _send_until_acked(
    sock: socket.socket,
    data: bytes,
    target: tuple[str, int],
    rid: str,
    args: argparse.Namespace,
    sealer: Sealer | None,
) -> int:
    try:
        mid, node = client.send_until_acked(sock, data, target, rid, args.timeout, args.retry, sealer)
    except client.Rejected as e:
        fail(EXIT_FAILED, f"rejected by {args.addr}: {e}")
    except client.NotListening as e:
        fail(EXIT_FAILED, str(e))
    except TimeoutError:
        hint = client.NEEDS_KEY if sealer is None else client.WRONG_KEY
        fail(EXIT_FAILED, f"no acknowledgement from {args.addr} within {args.timeout:g} s; {hint}")
    except OSError as e:
        fail(EXIT_FAILED, f"cannot send to {args.addr}: {e.strerror or e}")
    print(f"{mid} {node}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
