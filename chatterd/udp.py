"""The node's UDP socket: IPv4 or IPv6 by the --listen address. A socket bound to ``[::]``
takes IPv4 datagrams too (dual stack); their addresses arrive as ``::ffff:a.b.c.d`` and are
given to the core as plain IPv4 (:func:`from_socket`), and IPv4 destinations are written back
that way on the way out (:func:`to_socket`), so a member has one address, whichever socket."""

from __future__ import annotations

import ipaddress
import socket

from chatterd.core import wire

Addr = tuple[str, int]


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind(listen: Addr) -> socket.socket:
    """The node's UDP socket, bound, non-blocking, with roomy buffers."""
    sock = socket.socket(family_of(listen[0]), socket.SOCK_DGRAM)
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # [::] takes IPv4 too
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


def from_socket(addr: tuple[str, int] | tuple[str, int, int, int]) -> Addr:
    """A datagram's source as the core knows addresses: (host, port), IPv4-mapped unmapped."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, addr[1]


def to_socket(sock: socket.socket, addr: Addr) -> Addr:
    """A destination for ``sock``: an IPv4 address through an IPv6 socket is IPv4-mapped."""
    if sock.family == socket.AF_INET6 and "." in addr[0]:
        return "::ffff:" + addr[0], addr[1]
    return addr


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
