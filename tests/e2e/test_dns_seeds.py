"""Seeds from DNS with real processes and a real DNS server: in a network namespace made by
the test, dnsmasq answers for chatter.test (through the namespace's own resolv.conf, which
`ip netns exec` puts in place), and chatterd nodes join through `NAME:PORT` (every A record),
`dns+NAME:PORT` and `dnssrv+_chatter._udp.NAME`; a node whose seed name points nowhere joins
once the record changes, and a whole cluster restarted at new addresses finds itself again.
Every process is stopped by PID, and the namespace and its resolv.conf are removed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from e2e_helpers import wait_until

pytestmark = pytest.mark.e2e

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
DOMAIN = "chatter.test"
SRV = [("n2", 2428)]  # _chatter._udp.chatter.test -> n2.chatter.test:2428


def usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    if shutil.which("ip") is None or not os.path.exists(DNSMASQ):
        return "needs iproute2 and dnsmasq (CI installs them)"
    return None


class Netns:
    def __init__(self, tmp: Path) -> None:
        self.name = f"chatter-dns-{os.getpid()}"
        self.etc = Path("/etc/netns") / self.name
        self.tmp = tmp
        self.hosts = tmp / "hosts"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:2\n")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        left = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(self.etc, ignore_errors=True)

    def start(self, key: str, *argv: str) -> subprocess.Popen[bytes]:
        out = open(self.tmp / f"{key}.log", "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs[key] = proc
        return proc

    def kill(self, key: str) -> None:
        proc = self.procs.pop(key)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def records(self, **names: str) -> None:
        """The A records of NAME.chatter.test (one line per address), then dnsmasq reads them."""
        lines = [f"{ip} {name}.{DOMAIN}" for name, ips in names.items() for ip in ips.split(",")]
        self.hosts.write_text("\n".join(lines) + "\n")
        dns = self.procs.get("dnsmasq")
        if dns is not None:
            os.kill(dns.pid, signal.SIGHUP)

    def node(self, name: str, ip: str, join: str, *args: str) -> None:
        self.start(
            name, sys.executable, "-m", "chatterd", "--listen", f"{ip}:2428", "--http", f"{ip}:2428",
            "--name", name, "--join", join, "--profile", "local", "--log-format", "json", *args,
        )  # fmt: skip

    async def alive(self, ip: str) -> set[str]:
        argv = ["ip", "netns", "exec", self.name, sys.executable, "-m", "chatterd", "members", "--json"]
        res = await trio.run_process(
            [*argv, "--http", f"{ip}:2428"], capture_stdout=True, capture_stderr=True, check=False
        )
        if res.returncode != 0:
            return set()
        return {m["name"] for m in json.loads(res.stdout) if m["state"] == "alive"}


@contextlib.contextmanager
def namespace(tmp: Path) -> Iterator[Netns]:
    with Netns(tmp) as ns:
        srv = [f"--srv-host=_chatter._udp.{DOMAIN},{t}.{DOMAIN},{p}" for t, p in SRV]
        ns.records(seeds="127.0.0.11", n1="127.0.0.11", n2="127.0.0.12", late="127.0.0.99")
        ns.start(
            "dnsmasq", DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            f"--addn-hosts={ns.hosts}", "--listen-address=127.0.0.1", "--bind-interfaces", "--port=53",
            "--user=root", "--pid-file=", f"--local=/{DOMAIN}/", *srv,
        )  # fmt: skip
        yield ns


async def converged(ns: Netns, ips: dict[str, str], timeout: float = 25) -> None:
    want = set(ips)

    async def check() -> bool:
        for ip in ips.values():
            if await ns.alive(ip) != want:
                return False
        return True

    await wait_until(check, timeout, f"{sorted(want)} alive everywhere")


@contextlib.asynccontextmanager
async def started(tmp: Path) -> AsyncIterator[Netns]:
    with namespace(tmp) as ns:
        yield ns


@pytest.mark.skipif(usable() is not None, reason=str(usable()))
async def test_seeds_from_dns_a_srv_a_changing_record_and_a_cluster_restarted_elsewhere(tmp_path: Path) -> None:
    async with started(tmp_path) as ns:
        await trio.sleep(0.3)  # dnsmasq up
        ns.node("n1", "127.0.0.11", f"dns+seeds.{DOMAIN}:2428")  # the name is itself: a new cluster
        ns.node("n2", "127.0.0.12", f"seeds.{DOMAIN}:2428")  # a plain name: its A records
        ns.node("n3", "127.0.0.13", f"dnssrv+_chatter._udp.{DOMAIN}")  # SRV: n2.chatter.test:2428
        ips = {"n1": "127.0.0.11", "n2": "127.0.0.12", "n3": "127.0.0.13"}
        await converged(ns, ips)

        # A node whose seed name points where nothing runs keeps resolving; the record changes.
        ns.node("n4", "127.0.0.14", f"dns+late.{DOMAIN}:2428", "--retry-interval", "1")
        await trio.sleep(3)
        assert await ns.alive("127.0.0.14") == {"n4"}
        ns.records(seeds="127.0.0.11", n1="127.0.0.11", n2="127.0.0.12", late="127.0.0.13")
        await converged(ns, ips | {"n4": "127.0.0.14"})

        # The whole cluster goes; it comes back at new addresses, the seed name with it.
        for name in ("n1", "n2", "n3", "n4"):
            ns.kill(name)
        ns.records(seeds="127.0.0.21,127.0.0.22", n2="127.0.0.22")
        for i in (1, 2, 3):
            ns.node(f"m{i}", f"127.0.0.2{i}", f"dns+seeds.{DOMAIN}:2428", "--retry-interval", "1")
        await converged(ns, {f"m{i}": f"127.0.0.2{i}" for i in (1, 2, 3)})
