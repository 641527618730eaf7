"""Addresses as the wire and the command lines write them: ``HOST:PORT``."""

from __future__ import annotations


def parse_addr(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'HOST:PORT', ':PORT' or 'PORT' → (host, port). Raises ValueError with a clear text."""
    host, sep, port_s = text.rpartition(":")
    if not sep:
        host, port_s = "", text
    host = host.strip("[]") or default_host
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"invalid address {text!r}: expected HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid address {text!r}: port must be 0-65535")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"invalid address {text!r}: bad host")
    return host, port


def format_addr(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"
