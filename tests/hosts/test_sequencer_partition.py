"""The sequencer's primary cut off from its peers and the gateway, while it still reaches etcd
(issue #12, examples/sequencer).

Five hosts: etcd on h0; engines e1..e3 on h1..h3, each an ``engine.py`` app and its ``chatterd
--role leader --lock etcd://198.18.0.1:2379/engine/ --lock-ttl 2 --lease-ttl 1 --expect 3``
sidecar (``sequencer.Sequencer`` with a ``Place`` per host); the in-process ``sequencer.Gateway``
on h4 (its thread inside h4's namespace). The order log ``central_order_book.log`` is one file
on the filesystem the namespaces share (flock works across them). Orders stream; after a third,
iptables cuts the primary's host off from the two other engines and the gateway, both ways, not
from etcd. Its sidecar must give the role up for lost quorum (its key goes), another engine takes
``engine/leader`` at a higher epoch, the gateway moves to it and the stream completes: every id
once, no gap, no epoch written by two engines, none going back, and the seed's awk check prints
nothing. Then the cut heals: still one holder, the old primary refuses orders, and appended
nothing the fence would not allow.

The measured figures are printed as ``figure: ...`` lines (``pytest -s`` or ``-rP``); the
bounds are generous (15 s where ~3 s is expected).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from etcd_on_host import EtcdOnHost

from chatterd.testing.hosts import Host, HostNetwork, host_network
from chatterd.testing.nshttp import namespace_client

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "sequencer"))

from sequencer import PREFIX, ROLE, Engine, Gateway, Place, Sequencer, read_log, verify  # noqa: E402

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="the etcd binary is not installed (etcd-server)"),
]

ORDERS = 300
INTERVAL = 0.01  # s between orders
CUT_AT = ORDERS // 3
AFTER_HEAL = 10  # orders placed once the cut has healed
FORM_TIMEOUT = 60.0  # three engines up, one primary: 9-22 s on the loaded 2-core development machine
TAKEOVER_TIMEOUT = 15.0  # cut -> the new primary's first ack: ~3 s
STREAM_TIMEOUT = 60.0
HEAL_TIMEOUT = 30.0
AWK = "awk -F'[][]' '{print $2}' central_order_book.log | sort | uniq -d"


def figure(what: str, seconds: float) -> None:
    print(f"figure: {what}: {seconds:.2f} s")


@dataclass
class EngineView:
    """One engine, read from inside its own host (a cut never stands between the test and it):
    its app at its address, its sidecar's API on the host's loopback."""

    engine: Engine
    host: Host
    client: httpx.AsyncClient

    @property
    def name(self) -> str:
        return self.engine.name

    async def _get(self, url: str) -> Any | None:
        try:
            r = await self.client.get(url)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError):
            return None

    async def accepting(self) -> int | None:
        """The epoch the app accepts orders in, None if it does not (or does not answer)."""
        state = await self._get(self.engine.url + "/state")
        return None if state is None else state["accepting_epoch"]

    async def role(self) -> dict[str, Any] | None:
        rows = await self._get(self.engine.sidecar_url + "/v1/roles") or []
        return next((r for r in rows if r.get("role") == ROLE), None)

    async def role_lost(self, epoch: int) -> list[tuple[str, float]]:
        """(reason, wall time) of the sidecar's own role-lost events for ``epoch``."""
        events = await self._get(self.engine.sidecar_url + "/v1/events?since=0") or []
        return [
            (ev["payload"].get("reason", ""), ev["received_at"])
            for ev in events
            if ev["kind"] == "role-lost"
            and ev["payload"].get("holder") == self.name
            and ev["payload"].get("epoch") == epoch
        ]


@dataclass
class World:
    net: HostNetwork
    etcd: EtcdOnHost
    seq: Sequencer
    views: list[EngineView]
    gateway_host: Host

    def view(self, name: str) -> EngineView:
        return next(v for v in self.views if v.name == name)


@pytest.fixture
async def world(hosts_dir: Path) -> AsyncIterator[World]:
    with host_network(5) as net:
        etcd = EtcdOnHost(net[0], hosts_dir, PREFIX)
        views: list[EngineView] = []
        try:
            etcd.start()
            await etcd.wait_ready()
            places = [Place(h.addr, h.popen) for h in net.hosts[1:4]]
            with Sequencer(hosts_dir / "seq", etcd_url=etcd.url, places=places) as seq:
                for e, h in zip(seq.engines, net.hosts[1:4], strict=True):
                    views.append(EngineView(e, h, namespace_client(h.netns, timeout=1.0)))
                yield World(net, etcd, seq, views, net[4])
        finally:
            for v in views:
                await v.client.aclose()
            await etcd.client.aclose()


async def wait_until(check: Any, timeout: float, what: str, every: float = 0.05) -> None:
    try:
        with trio.fail_after(timeout):
            while not await check():
                await trio.sleep(every)
    except trio.TooSlowError:
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}") from None


async def one_primary(w: World, other_than: str | None = None, timeout: float = TAKEOVER_TIMEOUT) -> tuple[str, int]:
    """(name, epoch) of the one engine accepting orders, once there is exactly one."""
    found: dict[str, int] = {}

    async def check() -> bool:
        found.clear()
        for v in w.views:
            epoch = await v.accepting()
            if epoch is not None:
                found[v.name] = epoch
        return len(found) == 1 and other_than not in found

    await wait_until(check, timeout, f"one engine accepting, not {other_than}")
    [(name, epoch)] = found.items()
    return name, epoch


async def holders(w: World) -> dict[str, int]:
    """name -> epoch of every sidecar that says it holds the role."""
    out = {}
    for v in w.views:
        row = await v.role()
        if row is not None and row["held_here"]:
            out[v.name] = int(row["epoch"])
    return out


def send_from(host: Host, gw: Gateway, ids: range) -> None:
    """Place orders ``ids`` through the gateway, from inside ``host`` (a thread of its own)."""
    with host.inside():
        for i in ids:
            gw.send(i)
            time.sleep(INTERVAL)


async def stream_and_cut(w: World, gw: Gateway, victim: str, epoch: int) -> tuple[float, float]:
    """Orders 1..ORDERS from the gateway's host; once CUT_AT are acknowledged, cut ``victim``'s
    host off from the other engines and the gateway (not etcd's), and watch its etcd key go.
    Returns the cut's (monotonic, wall) times."""
    old = w.view(victim).host
    cut: list[float] = []

    async def pump() -> None:
        await trio.to_thread.run_sync(send_from, w.gateway_host, gw, range(1, ORDERS + 1))

    async def key_moved() -> bool:
        return await w.etcd.key(ROLE) != (victim, epoch)

    with trio.fail_after(STREAM_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            try:
                while len(gw.acks) < CUT_AT:
                    await trio.sleep(0.005)
                old.cut_off([v.host for v in w.views if v.name != victim] + [w.gateway_host])
                cut += [time.monotonic(), time.time()]  # the cut is in force
                await wait_until(key_moved, TAKEOVER_TIMEOUT, f"{victim}'s etcd key to go")
                figure(f"cut -> {victim}'s etcd key gone", time.monotonic() - cut[0])
            except BaseException:  # a failure, the timeout: the thread's send() gives up at once
                gw.stop.set()
                raise
    return cut[0], cut[1]


async def test_a_primary_cut_off_from_its_peers_and_the_gateway_hands_over(world: World) -> None:
    w = world
    t0 = time.monotonic()
    victim, epoch = await one_primary(w, timeout=FORM_TIMEOUT)
    figure("start -> one primary", time.monotonic() - t0)
    assert await w.etcd.key(ROLE) == (victim, epoch)
    gw = Gateway({e.name: e.url for e in w.seq.engines})
    gw.target = victim
    try:
        t_cut, cut_wall = await stream_and_cut(w, gw, victim, epoch)
        assert len(gw.acks) == ORDERS
        retried = [a.order_id for a in gw.acks if a.status == "duplicate"]
        print(f"figure: orders acknowledged as 'already in the log' (a retry after a lost ack): {retried}")
        new_ack = next(a for a in gw.acks if a.t > t_cut and a.engine != victim)
        figure(f"cut -> first order acknowledged by the new primary {new_ack.engine}", new_ack.t - t_cut)
        assert 0 < new_ack.t - t_cut < TAKEOVER_TIMEOUT
        new, new_epoch = new_ack.engine, new_ack.epoch
        assert new_epoch > epoch
        assert (gw.target, gw.acks[-1].engine, gw.acks[-1].epoch) == (new, new, new_epoch)  # the gateway moved

        lost = await w.view(victim).role_lost(epoch)
        assert lost and "lost quorum" in lost[0][0], lost
        figure(f"cut -> {victim}'s sidecar reports role-lost ({lost[0][0]})", lost[0][1] - cut_wall)
        assert await w.etcd.key(ROLE) == (new, new_epoch)  # the old key went, the new holder's is there
        assert await w.view(victim).accepting() is None
        check_log(w, ORDERS)

        await heal(w, victim, new, new_epoch)
        await trio.to_thread.run_sync(send_from, w.gateway_host, gw, range(ORDERS + 1, ORDERS + AFTER_HEAL + 1))
    finally:
        gw.close()
    assert {a.engine for a in gw.acks[ORDERS:]} == {new}
    check_log(w, ORDERS + AFTER_HEAL)
    check_old_primary_after_cut(w, victim, epoch, cut_wall)


async def heal(w: World, victim: str, new: str, new_epoch: int) -> None:
    """Heal the cut: the old primary learns of the new holder; still one holder, the same, for a
    while; the old primary refuses an order sent to it straight (421 or 409, never 200)."""
    old = w.view(victim)
    old.host.heal()
    t_heal = time.monotonic()

    async def merged() -> bool:
        row = await old.role()
        return row is not None and row["holder"] == new

    await wait_until(merged, HEAL_TIMEOUT, f"{victim} to learn that {new} holds the role")
    figure(f"heal -> {victim} knows {new} holds the role", time.monotonic() - t_heal)
    for _ in range(10):  # sampled for ~1 s
        assert await holders(w) == {new: new_epoch}
        assert await one_primary(w, timeout=2.0) == (new, new_epoch)
        await trio.sleep(0.1)
    assert await w.etcd.key(ROLE) == (new, new_epoch)
    async with namespace_client(w.gateway_host.netns, timeout=2.0) as client:
        r = await client.post(old.engine.url + "/order", json={"id": ORDERS + 1})
    assert r.status_code in (421, 409), (r.status_code, r.text)


def check_log(w: World, n: int) -> None:
    """verify(): each id 1..n once, no gap, no epoch written by two engines, none going back;
    and the seed's own duplicate check prints nothing."""
    res = verify(w.seq.log_path, n)
    assert res["ok"], res
    out = subprocess.run(["bash", "-c", AWK], cwd=w.seq.log_path.parent, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout == "", (out.stdout[:500], out.stderr)


def check_old_primary_after_cut(w: World, victim: str, epoch: int, cut_wall: float) -> None:
    """What the old primary wrote after the cut (at most an order in flight at that moment) is in
    its own epoch and before the first record of a higher one: the fence allowed it."""
    recs = read_log(w.seq.log_path)
    first_higher = next(i for i, r in enumerate(recs) if r["epoch"] > epoch)
    late = [(i, r) for i, r in enumerate(recs) if r["engine"] == victim and r["t"] > cut_wall]
    print(f"figure: records the old primary appended after the cut: {len(late)}")
    assert all(r["epoch"] == epoch and i < first_higher for i, r in late), late
