"""iptables rules of the benchmarks' own, always removed on the way out (needs root).

``PortAccounting``: bytes and packets on the nodes' ports, counted on lo.

    with PortAccounting(ports) as acct:
        acct.zero()
        ... idle window ...
        totals = acct.read()

A chain of its own (``CHBENCH<pid>``), jumped to from the first rule of OUTPUT for packets
leaving through ``lo``, holds one counting rule (no target) per port and direction:
``udp --sport P`` (datagrams a node sent: every system sends its UDP from its bound port),
``tcp --sport P`` and ``tcp --dport P`` (both directions of every TCP connection to a node's
port: push-pull, fallback pings; a connection's other end uses an ephemeral port). Each packet
on lo passes OUTPUT once, so each byte is counted once; the counts are IP packet sizes
(headers included). The rules are removed, and the chain deleted, when the block exits.

``LoopbackLoss``: drop each UDP datagram sent over lo to one of the given ports with probability
p (a chain of its own, like PortAccounting's: nothing else on the host loses a datagram).

``Loss``: drop each incoming UDP datagram with probability p (in the current network
namespace), after a plain counting rule, so that the loss actually applied can be read.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Self

from chatterd.testing.iptables import IptablesError, iptables, iptables_problem, statistic_drop

__all__ = [
    "IptablesError",
    "LoopbackLoss",
    "Loss",
    "PortAccounting",
    "Rules",
    "iptables",
    "iptables_problem",
    "statistic_drop",
]


def counted(listing: str) -> Iterator[tuple[list[str], int, int]]:
    """(fields, packets, bytes) of each rule with counters in ``iptables -S CHAIN -v`` output."""
    for line in listing.splitlines():
        f = line.split()
        if f[:1] == ["-A"] and "-p" in f and "-c" in f:
            c = f.index("-c")
            yield f, int(f[c + 1]), int(f[c + 2])


class Rules:
    """A context manager: ``open()`` on the way in (undone if it fails half-way), ``close()`` out."""

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PortAccounting(Rules):
    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.chain = f"CHBENCH{os.getpid()}"
        self._jump = ["OUTPUT", "-o", "lo", "-j", self.chain]
        self._active = False

    def open(self) -> None:
        iptables("-N", self.chain)
        self._active = True
        for port in self.ports:
            for proto, flag in (("udp", "--sport"), ("tcp", "--sport"), ("tcp", "--dport")):
                iptables("-A", self.chain, "-p", proto, flag, str(port))
        iptables("-I", *self._jump[:1], "1", *self._jump[1:])

    def close(self) -> None:
        if not self._active:
            return
        for _ in range(10):  # the jump, however many times it was inserted
            if not _rule_exists(self._jump):
                break
            iptables("-D", *self._jump, check=False)
        iptables("-F", self.chain, check=False)
        iptables("-X", self.chain, check=False)
        self._active = False

    def zero(self) -> None:
        iptables("-Z", self.chain)

    def read(self) -> dict[str, dict[str, int]]:
        """``{"udp": {"packets": .., "bytes": ..}, "tcp": {...}}`` summed over the ports since zero()."""
        out = {"udp": {"packets": 0, "bytes": 0}, "tcp": {"packets": 0, "bytes": 0}}
        for f, packets, nbytes in counted(iptables("-S", self.chain, "-v")):
            proto = f[f.index("-p") + 1]
            if proto in out:
                out[proto]["packets"] += packets
                out[proto]["bytes"] += nbytes
        return out


class Loss(Rules):
    """Drop each incoming UDP datagram with probability p (in the current network namespace)."""

    def __init__(self, p: float) -> None:
        self.count = ["INPUT", "-p", "udp"]
        self.drop = statistic_drop("INPUT", p)
        self.added: list[list[str]] = []

    def open(self) -> None:
        for rule in (self.count, self.drop):
            iptables("-A", *rule)
            self.added.append(rule)

    def close(self) -> None:
        while self.added:
            iptables("-D", *self.added.pop(), check=False)

    def read(self) -> dict[str, int]:
        """Datagrams that reached INPUT, and those dropped."""
        out = {"udp_in": 0, "dropped": 0}
        for f, packets, _ in counted(iptables("-S", "INPUT", "-v", check=False)):
            if f[f.index("-p") + 1] == "udp":
                out["dropped" if "DROP" in f else "udp_in"] += packets
        return out


class LoopbackLoss(Rules):
    def __init__(self, ports: Sequence[int], p: float) -> None:
        self.ports = list(ports)
        self.p = p
        self.chain = f"CHLOSS{os.getpid()}"
        self._jump = ["INPUT", "-i", "lo", "-p", "udp", "-j", self.chain]
        self._active = False

    def open(self) -> None:
        iptables("-N", self.chain)
        self._active = True
        for port in self.ports:
            rule = ["-p", "udp", "--dport", str(port), "-m", "statistic", "--mode", "random"]
            iptables("-A", self.chain, *rule, "--probability", f"{self.p}", "-j", "DROP")
        iptables("-I", *self._jump[:1], "1", *self._jump[1:])

    def close(self) -> None:
        if not self._active:
            return
        while _rule_exists(self._jump):
            iptables("-D", *self._jump, check=False)
        iptables("-F", self.chain, check=False)
        iptables("-X", self.chain, check=False)
        self._active = False

    def dropped(self) -> int:
        return sum(packets for _, packets, _ in counted(iptables("-S", self.chain, "-v")))


def _rule_exists(rule: Sequence[str]) -> bool:
    return subprocess.run(["iptables", "-w", "5", "-C", *rule], capture_output=True).returncode == 0
