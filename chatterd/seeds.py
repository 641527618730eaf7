"""Seeds: what ``--join`` names, and the addresses it stands for, kept fresh from DNS.

    HOST:PORT, [IPV6]:PORT       an address
    NAME:PORT                    every A and AAAA record of NAME, each a seed (memberlist's
                                 join collects all the records of a name too)
    dns+NAME:PORT                the same, said explicitly (Grafana Mimir's and Pyroscope's
                                 memberlist syntax, e.g. a Kubernetes headless Service)
    dnssrv+_chatter._udp.NAME    every SRV record of the name: its target's A/AAAA records at
                                 the record's port

Names are resolved with dnspython's asynchronous resolver on trio (the system's resolver
configuration, /etc/resolv.conf), never by a hand-written DNS client, and without blocking
the protocol loop. :class:`Discovery` resolves them at start, again every ``interval`` while
the node has not joined, and whenever it finds itself alone (no other live member: a whole
cluster restarted, its pods at new addresses), and hands the addresses to the node, which
keeps knocking on them until one answers. A name that does not resolve is one warning line
when that changes, never a crash.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from chatterd.core import wire

log = structlog.get_logger("chatterd.seeds")

Addr = tuple[str, int]
SRV_PREFIX, DNS_PREFIX = "dnssrv+", "dns+"
LOOKUP_TIMEOUT = 2.0  # one name, all its servers and retries
MAX_SEEDS = 256  # addresses kept from DNS: a name with thousands of records is not a seed list


@dataclass(frozen=True)
class Seed:
    """One --join value: ``kind`` is addr (a literal address), dns (A/AAAA) or srv."""

    kind: str
    host: str
    port: int
    text: str

    @property
    def literal(self) -> Addr | None:
        return (self.host, self.port) if self.kind == "addr" else None


def parse_seed(text: str) -> Seed:
    """A --join value, checked (ValueError with a clear text)."""
    if text.startswith(SRV_PREFIX):
        name = text[len(SRV_PREFIX) :].strip().rstrip(".")
        if not name or any(c.isspace() or c in ":[]/" for c in name):
            raise ValueError(f"invalid seed {text!r}: expected dnssrv+_SERVICE._udp.NAME (no port: SRV gives it)")
        return Seed("srv", name, 0, text)
    explicit = text.startswith(DNS_PREFIX)
    host, port = wire.parse_addr(text[len(DNS_PREFIX) :] if explicit else text)
    if port == 0:
        raise ValueError(f"invalid seed {text!r}: the port must not be 0")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return Seed("dns", host.rstrip("."), port, text)
    if explicit:
        raise ValueError(f"invalid seed {text!r}: dns+ needs a name, not an address")
    return Seed("addr", host, port, text)


class Lookup:
    """Names to addresses with dnspython (the system's resolver configuration)."""

    def __init__(self, resolver: Any | None = None) -> None:
        self._resolver = resolver

    def _get(self) -> Any:
        if self._resolver is None:
            import dns.asyncresolver  # only for a node with DNS seeds

            self._resolver = dns.asyncresolver.Resolver()
            self._resolver.lifetime = LOOKUP_TIMEOUT
        return self._resolver

    async def addresses(self, name: str) -> list[str]:
        """Every A and AAAA record of ``name`` (none: [])."""
        import dns.exception
        import dns.resolver

        out: list[str] = []
        failed: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._get().resolve(name, rdtype, search=True)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as e:  # timed out, refused: a failure if nothing else answers
                failed.append(f"{name} {rdtype}: {e}")
                continue
            out += [r.address for r in answer]
        if failed and not out:
            raise LookupError("; ".join(failed))
        return out

    async def services(self, name: str) -> list[tuple[str, int]]:
        """(target, port) of every SRV record of ``name``."""
        import dns.exception
        import dns.resolver

        try:
            answer = await self._get().resolve(name, "SRV", search=True)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as e:
            raise LookupError(f"{name} SRV: {e}") from None
        return [(r.target.to_text(omit_final_dot=True), int(r.port)) for r in answer]


async def resolve(seeds: Sequence[Seed], lookup: Lookup, v6: bool) -> tuple[list[Addr], list[str]]:
    """The addresses the seeds stand for now (IPv6 ones only when ``v6``), and the errors."""
    found: list[Addr] = []
    errors: list[str] = []
    for seed in seeds:
        try:
            if seed.kind == "addr":
                found.append((seed.host, seed.port))
            elif seed.kind == "dns":
                found += [(a, seed.port) for a in await lookup.addresses(seed.host)]
            else:
                for target, port in await lookup.services(seed.host):
                    found += [(a, port) for a in await lookup.addresses(target)]
        except LookupError as e:
            errors.append(str(e))
    usable = [a for a in dict.fromkeys(found) if v6 or ":" not in a[0]]
    return usable[:MAX_SEEDS], errors


class Discovery:
    """Keeps the node's seed addresses as DNS says, while it needs them."""

    def __init__(self, seeds: Sequence[Seed], *, v6: bool, interval: float, lookup: Lookup | None = None) -> None:
        self.seeds = list(seeds)
        self.v6 = v6
        self.interval = interval
        self.lookup = lookup or Lookup()
        self.current: list[Addr] | None = None
        self._errors: list[str] = []

    @property
    def needed(self) -> bool:
        return any(s.kind != "addr" for s in self.seeds)

    async def refresh(self) -> list[Addr] | None:
        """Resolve now; the new seed addresses when they changed, else None."""
        found, errors = await resolve(self.seeds, self.lookup, self.v6)
        if errors != self._errors:
            self._errors = errors
            if errors:
                log.warning("seeds_unresolved", errors=errors)
        addrs = found
        if addrs == self.current:
            return None
        self.current = addrs
        log.info("seeds_resolved", seeds=[s.text for s in self.seeds], addrs=[wire.format_addr(a) for a in addrs])
        return addrs

    async def run(self, wanted: Callable[[], bool], apply: Callable[[list[Addr]], None]) -> None:
        """Resolve at start, then every ``interval`` while ``wanted()`` (not joined, or alone)."""
        first = True
        while True:
            if first or wanted():
                addrs = await self.refresh()
                if addrs is not None:
                    apply(addrs)
                first = False
            await trio.sleep(self.interval)
