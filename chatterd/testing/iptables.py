"""iptables for tests and benchmarks: run it (in this namespace or another), say why it cannot be
used, and the rule that drops datagrams at random (``-m statistic``; netem is not needed).

Shared by :mod:`chatterd.testing.hosts` (cut a host off, lossy links) and
``benchmarks/_lib/iptables.py`` (the benchmarks' counting and loss rules).
"""

from __future__ import annotations

import os
import shutil
import subprocess


class IptablesError(RuntimeError):
    """An iptables command that failed: the command and iptables' own message."""


def _prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def iptables(*args: str, check: bool = True, netns: str | None = None) -> str:
    """Run ``iptables -w 5 ARGS`` (inside network namespace ``netns`` if given); its output.
    Raises IptablesError on failure when ``check``."""
    proc = subprocess.run([*_prefix(netns), "iptables", "-w", "5", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        where = f" (in {netns})" if netns else ""
        raise IptablesError(f"iptables {' '.join(args)}{where}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def iptables_restore(rules: str, netns: str | None = None) -> None:
    """Apply ``rules`` (iptables-save format) in one atomic step, keeping every other rule
    (``--noflush``; a chain declared with ``:NAME - [0:0]`` is emptied first). Raises IptablesError."""
    proc = subprocess.run(
        [*_prefix(netns), "iptables-restore", "-w", "5", "--noflush"], capture_output=True, text=True, input=rules
    )
    if proc.returncode != 0:
        where = f" in {netns}" if netns else ""
        raise IptablesError(f"iptables-restore{where}: {proc.stderr.strip() or proc.returncode}\n{rules}")


def iptables_problem() -> str | None:
    """Why iptables cannot be used here, or None."""
    if shutil.which("iptables") is None:
        return "iptables not found: apt-get update && apt-get install -y iptables"
    if os.geteuid() != 0:
        return "iptables needs root"
    try:
        iptables("-S", "OUTPUT")
    except IptablesError as e:
        return str(e)
    return None


def statistic_drop(chain: str, p: float, match: tuple[str, ...] = ()) -> list[str]:
    """A rule of ``chain`` dropping each UDP datagram with probability ``p`` (``match``: more
    conditions, e.g. ``("-i", "eth0")``)."""
    return [chain, *match, "-p", "udp", "-m", "statistic", "--mode", "random", "--probability", f"{p}", "-j", "DROP"]
