"""Bytes and packets on the nodes' ports, counted by iptables on lo (needs root).

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
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import Self


class AccountingError(RuntimeError):
    pass


def _iptables(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AccountingError(f"iptables {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def iptables_problem() -> str | None:
    """Why iptables cannot be used here, or None."""
    if shutil.which("iptables") is None:
        return "iptables not found: apt-get update && apt-get install -y iptables"
    if os.geteuid() != 0:
        return "iptables needs root"
    try:
        _iptables("-S", "OUTPUT")
    except AccountingError as e:
        return str(e)
    return None


class PortAccounting:
    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.chain = f"CHBENCH{os.getpid()}"
        self._jump = ["OUTPUT", "-o", "lo", "-j", self.chain]
        self._active = False

    def __enter__(self) -> Self:
        _iptables("-N", self.chain)
        self._active = True
        try:
            for port in self.ports:
                for proto, flag in (("udp", "--sport"), ("tcp", "--sport"), ("tcp", "--dport")):
                    _iptables("-A", self.chain, "-p", proto, flag, str(port))
            _iptables("-I", *self._jump[:1], "1", *self._jump[1:])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._active:
            return
        for _ in range(10):  # the jump, however many times it was inserted
            if not _rule_exists(self._jump):
                break
            _iptables("-D", *self._jump, check=False)
        _iptables("-F", self.chain, check=False)
        _iptables("-X", self.chain, check=False)
        self._active = False

    def zero(self) -> None:
        _iptables("-Z", self.chain)

    def read(self) -> dict[str, dict[str, int]]:
        """``{"udp": {"packets": .., "bytes": ..}, "tcp": {...}}`` summed over the ports since zero()."""
        out = {"udp": {"packets": 0, "bytes": 0}, "tcp": {"packets": 0, "bytes": 0}}
        for line in _iptables("-S", self.chain, "-v").splitlines():
            f = line.split()
            if f[:1] != ["-A"] or "-p" not in f or "-c" not in f:
                continue
            proto = f[f.index("-p") + 1]
            c = f.index("-c")
            if proto in out:
                out[proto]["packets"] += int(f[c + 1])
                out[proto]["bytes"] += int(f[c + 2])
        return out


def _rule_exists(rule: Sequence[str]) -> bool:
    return subprocess.run(["iptables", "-w", "5", "-C", *rule], capture_output=True).returncode == 0
