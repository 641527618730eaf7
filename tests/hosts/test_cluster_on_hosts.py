"""chatterd on five hosts made of network namespaces: what a multi-host cluster does that one
machine's loopback cannot show. Every node runs the same command (port 2428, seed 198.18.0.1,
no ``--advertise``); the outcomes are asserted with wide margins (timeouts of 20-30 s where a
second or two is expected). The measured figures are printed (``pytest -s`` or ``-rP`` shows
them, as ``figure: ...`` lines); tight figures belong to a benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from chatterd.testing.hostcluster import PORT, HostCluster, HostNode, host_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

N = 5
FORM_TIMEOUT = 30.0  # five hosts form in ~4 s, Python's start-up included
DEAD_TIMEOUT = 20.0  # a crash is known everywhere in ~1.5 s in the local profile
HEAL_TIMEOUT = 30.0  # a healed cut merges at the next reconnect (every ~2 s), then push-pull


def figure(what: str, seconds: float) -> None:
    print(f"figure: {what}: {seconds:.2f} s")


async def dead_on_both_sides(cluster: HostCluster, cut: HostNode, timeout: float) -> tuple[float, float]:
    """Seconds until every other node sees ``cut`` dead, and until ``cut`` sees every other dead."""
    rest = [n for n in cluster.nodes if n is not cut]
    start = trio.current_time()
    seen: dict[str, float] = {}

    async def check() -> bool:
        if "rest" not in seen:
            views = [await cluster.states(n) for n in rest]
            if all(v.get(cut.name) == "dead" for v in views):
                seen["rest"] = trio.current_time() - start
        if "cut" not in seen:
            view = await cluster.states(cut)
            if all(view.get(n.name) == "dead" for n in rest):
                seen["cut"] = trio.current_time() - start
        return len(seen) == 2

    await cluster.wait_for(check, timeout, what=lambda: f"{cut.name} and the rest dead to each other; so far {seen}")
    return seen["rest"], seen["cut"]


async def one_holder(
    cluster: HostCluster, role: str, nodes: list[HostNode], other_than: str | None = None
) -> tuple[str, int]:
    """Wait until every one of ``nodes`` reports the same holder of ``role`` (not ``other_than``),
    with the same epoch; that (holder, epoch)."""
    found: list[tuple[str, int]] = []
    last: list[object] = []

    async def check() -> bool:
        views = await cluster.holders(role, nodes)
        last[:] = [views]
        distinct = set(views.values())
        holder, epoch = distinct.pop() if len(distinct) == 1 else (None, 0)
        found[:] = [(str(holder), int(epoch))] if holder is not None and holder != other_than else []
        return bool(found)

    await cluster.wait_for(check, timeout=DEAD_TIMEOUT, what=lambda: f"one holder of {role}, not {other_than}: {last}")
    return found[0]


async def test_five_hosts_form_from_one_seed_with_one_command(hosts_dir: Path) -> None:
    async with host_cluster(N, base_dir=hosts_dir, timeout=FORM_TIMEOUT) as cluster:
        assert cluster.formed_in is not None
        figure("5 hosts formed (start to all alive everywhere)", cluster.formed_in)
        want = {n.name: f"198.18.0.{i + 1}:{PORT}" for i, n in enumerate(cluster.nodes)}
        for node in cluster.nodes:
            members = await node.members()
            assert {k: m["state"] for k, m in members.items()} == dict.fromkeys(want, "alive"), node.name
            assert {k: m["addr"] for k, m in members.items()} == want, f"as {node.name} sees them"
        # One command for every host: only the name and the data dir differ; no --advertise.
        commands = {
            tuple(a for a in cluster.command(n.host) if a not in (n.name, str(n.data_dir))) for n in cluster.nodes
        }
        assert len(commands) == 1
        assert "--advertise" not in next(iter(commands))
        assert "198.18.0.1:2428" in next(iter(commands))


async def test_advertise_still_overrides_the_chosen_address(hosts_dir: Path) -> None:
    async with host_cluster(3, base_dir=hosts_dir, start=False) as cluster:
        extra = "198.18.0.103"  # a second address of h2, the one it tells its peers
        cluster.network[2].run("ip", "addr", "add", f"{extra}/24", "dev", "eth0")
        for node in cluster.nodes:
            cluster.start(node.name, args=["--advertise", f"{extra}:{PORT}"] if node.name == "h2" else [])
        await cluster.wait_converged(FORM_TIMEOUT)
        for node in cluster.nodes:
            addrs = {k: m["addr"] for k, m in (await node.members()).items()}
            assert addrs == {"h0": "198.18.0.1:2428", "h1": "198.18.0.2:2428", "h2": f"{extra}:2428"}, node.name


async def test_kill_9_of_a_host_is_seen_dead_by_all_others(hosts_dir: Path) -> None:
    async with host_cluster(N, base_dir=hosts_dir, timeout=FORM_TIMEOUT) as cluster:
        victim = cluster.node("h3")
        victim.kill()  # SIGKILL, by PID
        took = await cluster.wait_state(victim.name, "dead", timeout=DEAD_TIMEOUT)
        figure("kill -9 -> dead on the 4 others", took)
        for node in cluster.running():
            states = await cluster.states(node)
            assert states[victim.name] == "dead"
            assert all(v == "alive" for k, v in states.items() if k != victim.name), (node.name, states)


async def test_a_cut_off_host_and_the_rest_see_each_other_dead_then_heal_alone(hosts_dir: Path) -> None:
    async with host_cluster(N, base_dir=hosts_dir, timeout=FORM_TIMEOUT) as cluster:
        cut = cluster.node("h2")
        cut.host.cut_off()  # iptables in h2's namespace: no UDP or TCP to or from the others
        rest_saw, cut_saw = await dead_on_both_sides(cluster, cut, DEAD_TIMEOUT)
        figure("cut -> the 4 others see h2 dead", rest_saw)
        figure("cut -> h2 sees the 4 others dead", cut_saw)
        cut.host.heal()  # nothing else: the nodes find each other again by themselves
        took = await cluster.wait_converged(HEAL_TIMEOUT)
        figure("heal -> all 5 alive everywhere", took)
        assert all(n.running() for n in cluster.nodes)


async def test_a_rebooted_host_rejoins_through_the_peers_in_its_data_dir(hosts_dir: Path) -> None:
    async with host_cluster(N, base_dir=hosts_dir, timeout=FORM_TIMEOUT) as cluster:
        node = cluster.node("h4")
        peers = {n.addr for n in cluster.nodes if n is not node}

        async def saved() -> bool:
            return set(node.saved_peers()) == peers  # written at most every 5 s as peers change

        await cluster.wait_for(saved, timeout=20)
        node_id = (await cluster.nodes[0].members())[node.name]["id"]
        node.kill()
        await node.wait_exit()
        await cluster.wait_state(node.name, "dead", timeout=DEAD_TIMEOUT)
        cluster.start(node.name, join=False)  # the "reboot": same command and data dir, no --join
        assert "--join" not in node.args
        took = await cluster.wait_converged(HEAL_TIMEOUT)
        figure("restart without --join -> all 5 alive everywhere", took)
        for other in cluster.nodes:
            assert (await other.members())[node.name]["id"] == node_id, other.name


async def test_a_role_moves_to_the_majority_when_its_holders_host_is_cut_off(hosts_dir: Path) -> None:
    args = ["--role", "leader:1", "--expect", str(N)]
    async with host_cluster(N, args=args, base_dir=hosts_dir, timeout=FORM_TIMEOUT) as cluster:
        holder, epoch = await one_holder(cluster, "leader", cluster.nodes)
        old = cluster.node(holder)
        majority = [n for n in cluster.nodes if n is not old]
        start = trio.current_time()
        old.host.cut_off()

        async def stepped_down() -> bool:
            roles = await old.try_get("/v1/roles")
            return roles is not None and not any(r["held_here"] for r in roles)

        down = await cluster.wait_for(stepped_down, timeout=DEAD_TIMEOUT)  # --expect 5: 1 is no majority
        new, new_epoch = await one_holder(cluster, "leader", majority, other_than=holder)
        figure(f"cut holder {holder} -> it steps down", down)
        figure(f"cut holder {holder} -> the 4 others agree on {new}", trio.current_time() - start)
        assert new != holder and new_epoch > epoch
        old.host.heal()
        await cluster.wait_converged(HEAL_TIMEOUT)
        after, after_epoch = await one_holder(cluster, "leader", cluster.nodes)
        assert after_epoch >= new_epoch
        assert after == new  # equal priorities: the role does not go back
