"""The node's UDP socket, and the address it tells its peers when it listens on 0.0.0.0."""

from __future__ import annotations

import socket

from chatterd.core import wire

Addr = tuple[str, int]


def bind(listen: Addr) -> socket.socket:
    """The node's UDP socket, bound, non-blocking, with roomy buffers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(listen)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {wire.format_addr(listen)}: {e.strerror}") from None
    sock.setblocking(False)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        except OSError:
            pass
    return sock


def local_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
