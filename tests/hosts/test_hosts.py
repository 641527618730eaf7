"""The hosts harness itself (chatterd.testing.hosts), without chatterd: the topology and its
addresses, cuts and loss as datagrams see them, and the clean-up whatever happens (an error,
Ctrl-C, SIGTERM to the runner, a process that ignores SIGTERM or escaped its parent, a run
killed before it could)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import chatterd
from chatterd.testing.hosts import PREFIX, HostNetwork, host_network, remove_stale
from chatterd.testing.netns import add_namespace, delete_namespace, list_namespaces, namespace_pids, pid_alive

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

PROBE_PORT = 5000


def udp_probe(net: HostNetwork, src: int, dst: int) -> str:
    """Send one datagram from host ``src`` to host ``dst``: "ok", "lost" or "refused" (EPERM)."""
    rx = net[dst].socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = net[src].socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((net[dst].addr, PROBE_PORT))
        rx.settimeout(0.5)
        try:
            tx.sendto(b"probe", (net[dst].addr, PROBE_PORT))
        except PermissionError:
            return "refused"
        try:
            return "ok" if rx.recv(16) == b"probe" else "garbled"
        except TimeoutError:
            return "lost"


def tcp_reaches(net: HostNetwork, src: int, dst: int) -> bool:
    """Whether a TCP connection from host ``src`` to a listener on host ``dst`` opens (1 s)."""
    server = net[dst].socket()
    client = net[src].socket()
    with server, client:
        server.bind((net[dst].addr, PROBE_PORT))
        server.listen()
        client.settimeout(1.0)
        try:
            client.connect((net[dst].addr, PROBE_PORT))
        except OSError:
            return False
        return True


def ours(net: HostNetwork) -> list[str]:
    return [n for n in list_namespaces() if n.startswith(net.run_id + "-")]


def test_hosts_on_a_bridge_of_their_own_with_test_range_addresses_only() -> None:
    with host_network(3) as net:
        assert sorted(ours(net)) == sorted([net.bridge_ns, *(h.netns for h in net)])
        assert net.run_id.startswith(f"{PREFIX}{os.getpid()}-")
        for i, host in enumerate(net):
            addrs = host.run("ip", "-o", "addr", "show").stdout
            assert f"inet 198.18.0.{i + 1}/24" in addrs
            assert [line.split()[3] for line in addrs.splitlines()] == ["127.0.0.1/8", f"198.18.0.{i + 1}/24"]
            assert "UP" in host.run("ip", "-o", "link", "show", "lo").stdout  # lo is up
        bridged = net[0].network.bridge_ns
        ports = subprocess.run(["ip", "-n", bridged, "-o", "link", "show", "master", "br0"], capture_output=True)
        assert all(f" {h.name}@".encode() in ports.stdout for h in net)
        assert "br0" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout  # not in root
        assert [udp_probe(net, a, b) for a, b in [(0, 1), (1, 2), (2, 0)]] == ["ok"] * 3
    assert ours(net) == []


def test_cut_off_heal_partition_and_loss_as_datagrams_see_them() -> None:
    with host_network(3) as net:
        net[0].cut_off()
        assert udp_probe(net, 0, 2) == "refused"  # the cut host's own firewall refuses the send
        assert udp_probe(net, 2, 0) == "lost"
        assert udp_probe(net, 1, 2) == "ok"  # the others still talk
        assert not tcp_reaches(net, 1, 0) and not tcp_reaches(net, 0, 2)
        net[0].heal()
        assert [udp_probe(net, 0, 2), udp_probe(net, 2, 0)] == ["ok", "ok"] and tcp_reaches(net, 1, 0)
        net.partition([net[0], net[1]])  # {h0, h1} | {h2}
        assert [udp_probe(net, 0, 1), udp_probe(net, 2, 1), udp_probe(net, 1, 2)] == ["ok", "lost", "refused"]
        net.heal_all()
        net[1].set_loss(1.0)  # every datagram into h1 dropped, none out of it
        assert [udp_probe(net, 0, 1), udp_probe(net, 1, 0)] == ["lost", "ok"]
        assert tcp_reaches(net, 0, 1)  # the loss is UDP only
        net[1].set_loss(0.0)
        assert udp_probe(net, 0, 1) == "ok"


def test_every_process_is_stopped_by_pid_and_the_namespaces_deleted_on_an_error(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ignores_term = (
        f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open({str(ready)!r}, 'w'); "
        "time.sleep(600)"
    )
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the test failed"), host_network(2, grace=0.5) as net:
        plain = net[0].popen(["sleep", "600"])
        stubborn = net[1].popen([sys.executable, "-c", ignores_term])
        while not ready.exists():  # its handler is in place
            assert stubborn.poll() is None and time.monotonic() - started < 10
            time.sleep(0.02)
        net[1].run("sh", "-c", "sleep 600 >/dev/null 2>&1 &")  # escaped its parent: only `ip netns pids` finds it
        (escaped,) = [p for p in namespace_pids(net[1].netns) if p != stubborn.pid]
        raise RuntimeError("the test failed")
    assert plain.returncode == -15 and stubborn.returncode == -9  # SIGTERM; SIGKILL after the grace
    assert not pid_alive(escaped) or open(f"/proc/{escaped}/stat").read().split()[2] == "Z"
    assert ours(net) == []
    assert time.monotonic() - started < 15


def test_ctrl_c_in_the_block_cleans_up_too() -> None:
    with pytest.raises(KeyboardInterrupt), host_network(1) as net:
        proc = net[0].popen(["sleep", "600"])
        raise KeyboardInterrupt
    assert proc.returncode is not None
    assert ours(net) == []


def test_stale_namespaces_of_a_dead_run_are_removed_and_live_ones_kept() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the "crashed earlier run"
    stale = f"{PREFIX}{gone.pid}-0-h0"
    live = f"{PREFIX}1-0-h0"  # as if made by PID 1, which runs and started before it
    add_namespace(stale)
    add_namespace(live)
    try:
        with host_network(1) as net:  # making a network removes the stale ones first
            assert stale not in list_namespaces()
            assert live in list_namespaces()
            assert net[0].netns in list_namespaces()
            assert remove_stale() == []  # this run's own namespaces stay: its pid is alive
            assert net[0].netns in list_namespaces()
    finally:
        delete_namespace(stale)  # if the test failed before the harness did it
        delete_namespace(live)


SIGTERMED = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground runner
from chatterd.testing.hosts import host_network
with host_network(1) as net:
    proc = net[0].popen(["sleep", "600"])
    print(net[0].netns, proc.pid, flush=True)
    time.sleep(600)
"""


def test_a_runner_stopped_by_sigterm_cleans_up_as_on_ctrl_c() -> None:
    repo = Path(chatterd.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    runner = subprocess.Popen([sys.executable, "-c", SIGTERMED], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert runner.stdout is not None
        netns, pid = runner.stdout.readline().split()
        assert netns in list_namespaces() and pid_alive(int(pid))
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(30) == -signal.SIGINT  # KeyboardInterrupt, after the clean-up (Python exits so)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert netns not in list_namespaces()
    assert not pid_alive(int(pid)) or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
