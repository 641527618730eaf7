"""--join values and what they stand for: addresses, names (every A/AAAA record), dns+ and
dnssrv+ (SRV: each target's addresses at its port), resolved by dnspython; here against a
fake resolver, and against a real DNS server (dnsmasq on loopback) when it is installed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from chatterd import seeds
from chatterd.seeds import Lookup, Seed, parse_seed, resolve


@pytest.mark.parametrize(
    ("text", "seed"),
    [
        ("198.18.0.1:2428", Seed("addr", "198.18.0.1", 2428, "198.18.0.1:2428")),
        ("[2001:2::1]:2428", Seed("addr", "2001:2::1", 2428, "[2001:2::1]:2428")),
        ("chatter.default.svc:2428", Seed("dns", "chatter.default.svc", 2428, "chatter.default.svc:2428")),
        ("dns+chatter.default.svc:7946", Seed("dns", "chatter.default.svc", 7946, "dns+chatter.default.svc:7946")),
        (
            "dnssrv+_chatter._udp.chatter.svc.",
            Seed("srv", "_chatter._udp.chatter.svc", 0, "dnssrv+_chatter._udp.chatter.svc."),
        ),
    ],
)
def test_seed_forms(text: str, seed: Seed) -> None:
    assert parse_seed(text) == seed


@pytest.mark.parametrize("text", ["dnssrv+", "dnssrv+name:2428", "dns+198.18.0.1:2428", "name:0", "name", "a b:1"])
def test_bad_seeds_say_why(text: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        parse_seed(text)


class FakeLookup(Lookup):
    def __init__(
        self, a: dict[str, list[str]], srv: dict[str, list[tuple[str, int]]], broken: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.a, self.srv, self.broken = a, srv, broken

    async def addresses(self, name: str) -> list[str]:
        if name in self.broken:
            raise LookupError(f"{name} A: timed out")
        return self.a.get(name, [])

    async def services(self, name: str) -> list[tuple[str, int]]:
        return self.srv.get(name, [])


async def test_every_record_is_a_seed_and_ipv6_only_on_an_ipv6_socket() -> None:
    lookup = FakeLookup(
        {"seeds.test": ["198.18.0.1", "198.18.0.2", "2001:2::3"], "n4.test": ["198.18.0.4"], "n5.test": ["198.18.0.5"]},
        {"_chatter._udp.test": [("n4.test", 2500), ("n5.test", 2501)]},
        broken=("gone.test",),
    )
    specs = [parse_seed(t) for t in ("seeds.test:2428", "dnssrv+_chatter._udp.test", "198.18.0.9:1", "gone.test:2")]
    v4, errors = await resolve(specs, lookup, v6=False)
    assert v4 == [
        ("198.18.0.1", 2428),
        ("198.18.0.2", 2428),
        ("198.18.0.4", 2500),
        ("198.18.0.5", 2501),
        ("198.18.0.9", 1),
    ]
    assert errors == ["gone.test A: timed out"]
    both, _ = await resolve(specs, lookup, v6=True)
    assert ("2001:2::3", 2428) in both and len(both) == 6


async def test_discovery_reports_only_changes() -> None:
    lookup = FakeLookup({"seeds.test": ["198.18.0.1"]}, {})
    d = seeds.Discovery([parse_seed("seeds.test:2428")], v6=False, interval=1.0, lookup=lookup)
    assert await d.refresh() == [("198.18.0.1", 2428)]
    assert await d.refresh() is None
    lookup.a["seeds.test"] = ["198.18.0.7", "198.18.0.1"]
    assert await d.refresh() == [("198.18.0.7", 2428), ("198.18.0.1", 2428)]


# ---------------------------------------------------------------------- a real DNS server


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Any:
    """dnsmasq on 127.0.0.1 at a free port, with a hosts file the test rewrites (then SIGHUP)."""
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.path.exists(exe):
        pytest.skip("dnsmasq is not installed (CI installs it: apt-get install dnsmasq)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hosts = tmp_path / "hosts"
    hosts.write_text("198.18.0.1 seeds.chatter.test\n198.18.0.2 seeds.chatter.test\n2001:2::2 seeds.chatter.test\n")
    argv = [
        exe, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", f"--addn-hosts={hosts}",
        "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={port}", "--user=root", "--pid-file=",
        "--host-record=n4.chatter.test,198.18.0.4", "--host-record=n5.chatter.test,198.18.0.5",
        "--srv-host=_chatter._udp.chatter.test,n4.chatter.test,2500",
        "--srv-host=_chatter._udp.chatter.test,n5.chatter.test,2501", "--local=/chatter.test/",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        yield port, hosts, proc
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.mark.e2e
async def test_against_dnsmasq_a_aaaa_srv_and_a_change(dnsmasq: Any) -> None:
    import dns.asyncresolver

    port, hosts, proc = dnsmasq
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers, r.port, r.lifetime = ["127.0.0.1"], port, 2.0
    lookup = Lookup(r)
    specs = [parse_seed("dns+seeds.chatter.test:2428"), parse_seed("dnssrv+_chatter._udp.chatter.test")]
    found, errors = await resolve(specs, lookup, v6=True)
    assert errors == []
    assert set(found) == {
        ("198.18.0.1", 2428), ("198.18.0.2", 2428), ("2001:2::2", 2428), ("198.18.0.4", 2500), ("198.18.0.5", 2501),
    }  # fmt: skip
    hosts.write_text("198.18.0.9 seeds.chatter.test\n")
    os.kill(proc.pid, signal.SIGHUP)  # dnsmasq reads its hosts files again
    time.sleep(0.3)
    found, _ = await resolve(specs[:1], lookup, v6=True)
    assert found == [("198.18.0.9", 2428)]
    found, _ = await resolve([parse_seed("nothing.chatter.test:1")], lookup, v6=True)
    assert found == []
