"""The HTTP API's listening socket, bound and listening before the node says anything.

A port clash of the API must read like one of the UDP port (chatterd/udp.py): one line on
stderr and exit status 1, not a node that logs ``started``, then ``stopped``, then the error.
The API's server (hypercorn, chatterd/api.py) is imported late and off the protocol loop (its
imports are slow), so the port is taken here, at start, and the socket handed to it. It
listens at once: on Linux two sockets with SO_REUSEADDR may bind one port while neither
listens, so only a listening socket holds it. Connections that come before the server runs
wait in the backlog.
"""

from __future__ import annotations

import socket

from chatterd.core import wire

Addr = tuple[str, int]

BACKLOG = 100  # hypercorn's default


def bind(addr: Addr) -> socket.socket:
    """A TCP socket listening on ``addr`` (as hypercorn would bind it: SO_REUSEADDR, no Nagle),
    or OSError with the line to print ("cannot serve HTTP on ADDR: Address already in use")."""
    sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot serve HTTP on {wire.format_addr(addr)}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def bind_beside(addr: Addr | None, udp_sock: socket.socket) -> socket.socket | None:
    """bind(addr), for a node whose UDP socket is ``udp_sock``: closed too if this fails (the
    node does not start). None for a node without the API."""
    if addr is None:
        return None
    try:
        return bind(addr)
    except OSError:
        udp_sock.close()
        raise


def hand_over(sock: socket.socket) -> str:
    """The socket as hypercorn's ``bind`` entry (``fd://N``): hypercorn owns the descriptor
    from then on, and ``sock`` is left closed without closing it (no double close)."""
    return f"fd://{sock.detach()}"
