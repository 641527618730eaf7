"""Addresses as the wire and the command lines write them: ``HOST:PORT``, with an IPv6 host
in brackets (``[2001:db8::1]:2428``, ``[::]:2428``), as URLs do."""

from __future__ import annotations


def parse_addr(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'HOST:PORT', '[IPV6]:PORT', ':PORT' or 'PORT' → (host, port). Raises ValueError with a
    clear text."""
    text_ = text.strip()
    if text_.startswith("["):
        host, sep, port_s = text_[1:].partition("]")
        if not sep or not port_s.startswith(":") or not host:
            raise ValueError(f"invalid address {text!r}: expected [IPV6]:PORT")
        port_s = port_s[1:]
    else:
        host, sep, port_s = text_.rpartition(":")
        if not sep:
            host, port_s = "", text_
        if ":" in host:
            raise ValueError(f"invalid address {text!r}: write an IPv6 address in brackets, [IPV6]:PORT")
        host = host or default_host
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"invalid address {text!r}: expected HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid address {text!r}: port must be 0-65535")
    if not host or any(c.isspace() or c in "[]" for c in host):
        raise ValueError(f"invalid address {text!r}: bad host")
    return host, port


def format_addr(addr: tuple[str, int]) -> str:
    host = addr[0]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
