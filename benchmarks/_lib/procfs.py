"""Readings from /proc: CPU ticks of a process, the machine's busy share, load, RSS, UDP drops."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    return int(fields[11]) + int(fields[12])  # fields 14 and 15


def cpu_pct(ticks: int, seconds: float) -> float:
    """Clock ticks spent over ``seconds``, as % of one core."""
    return 100.0 * ticks / CLK_TCK / seconds


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The machine's busy share between two ``machine_busy()`` readings, % of all cores."""
    return 100.0 * (after[0] - before[0]) / max(1, after[1] - before[1])


def self_cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    t = os.times()
    return t.user + t.system


def loadavg_fields() -> list[str]:
    """The 1, 5 and 15 minute load averages as /proc/loadavg writes them."""
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def loadavg() -> list[float]:
    return [float(x) for x in loadavg_fields()]


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (0.0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def udp_drops(port: int) -> int | None:
    """The kernel's receive-drop counter of the UDP socket bound to 127.0.0.1:port (/proc/net/udp)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/udp") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1] == want:
                    return int(cols[-1])
    except OSError:
        return None
    return None
