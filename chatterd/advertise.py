"""The address a node tells its peers, when --listen is a wildcard (0.0.0.0 or [::]).

Peers send to the advertised address, so it must be one they can reach: never a loopback
address when they are remote (Debian maps the host name to 127.0.1.1, so resolving the host
name, the old way, made a cluster of hosts that each saw the others dead). In order:

1. ``--advertise``, when given;
2. the --listen address, when it is a specific one;
3. the address of the interface that routes to a seed: the source address the kernel picks
   for a datagram to it (a UDP ``connect``, which sends nothing);
4. this host's own addresses (interfaces up; not loopback, not link-local): the only one, or
   the first of several, preferring the --listen family (give --advertise to choose);
5. loopback, when there is nothing else (a single-host cluster).

The runtime logs the choice and its reason in one line (``advertise_chosen``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatterd.core import wire
from chatterd.udp import family_of, is_loopback, is_wildcard

Addr = tuple[str, int]


class Logger(Protocol):
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...


@dataclass(frozen=True)
class Choice:
    addr: Addr
    reason: str
    candidates: list[str] = field(default_factory=list)  # this host's addresses, when they decided

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


def choose(bound: Addr, seeds: Sequence[Addr], given: Addr | None) -> Choice:
    if given is not None:
        return Choice(given, "given with --advertise")
    host, port = bound
    if not is_wildcard(host):
        return Choice(bound, "the --listen address")
    for seed in seeds:
        src = route_source(seed)
        if src is not None and (not is_loopback(src) or is_loopback(seed[0])):
            return Choice((src, port), f"the address of the interface that routes to the seed {wire.format_addr(seed)}")
    v6 = family_of(host) == socket.AF_INET6
    found = own_addresses(prefer_v6=v6)
    if found:
        why = "this host's only address" if len(found) == 1 else f"the first of this host's {len(found)} addresses"
        return Choice((found[0], port), why, found)
    return Choice(("::1" if v6 else "127.0.0.1", port), "this host has no address but loopback")


def route_source(dest: Addr) -> str | None:
    """The source address the kernel would give a datagram to ``dest`` (nothing is sent)."""
    try:
        with socket.socket(family_of(dest[0]), socket.SOCK_DGRAM) as s:
            s.connect(dest)
            return str(s.getsockname()[0])
    except (OSError, ValueError):
        return None


def own_addresses(prefer_v6: bool = False) -> list[str]:
    """This host's usable addresses: interfaces that are up; no loopback, link-local or
    unspecified address; the preferred family first, each family in interface order."""
    import psutil  # only when --listen is a wildcard and no seed routes

    stats = psutil.net_if_stats()
    v4: list[str] = []
    v6: list[str] = []
    for name, addrs in psutil.net_if_addrs().items():
        st = stats.get(name)
        if st is not None and not st.isup:
            continue
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(a.address.split("%")[0])
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
                continue
            (v6 if ip.version == 6 else v4).append(str(ip))
    return v6 + v4 if prefer_v6 else v4 + v6


def log_choice(log: Logger, choice: Choice, seeds: Sequence[Addr]) -> None:
    """One line: the address chosen and why; a warning when it may be the wrong one."""
    addr = wire.format_addr(choice.addr)
    remote_seeds = [s for s in seeds if not is_loopback(s[0])]
    if is_loopback(choice.addr[0]) and remote_seeds:
        log.warning("advertise_chosen", addr=addr, reason=choice.reason, detail=LOOPBACK_WARNING)
    elif choice.ambiguous:
        log.warning(
            "advertise_chosen",
            addr=addr,
            reason=choice.reason,
            candidates=choice.candidates,
            detail="several addresses: give --advertise to choose another",
        )
    else:
        log.info("advertise_chosen", addr=addr, reason=choice.reason)


LOOPBACK_WARNING = "a loopback address, and the seeds are remote: they cannot reach it (give --advertise)"
