"""The operator routes in-process (chatterd.opsapi, around a Runtime of a simulated node):
/v1/info's shape, /v1/force-leave's hostile bodies and refusals, /v1/monitor behind the token
beyond loopback, a bad level, and the limit on monitors; the CLI's help lists the commands
and shows units, not argument names, as placeholders."""

from __future__ import annotations

import argparse

import httpx
import pytest
import trio

from chatter_inject.cli import build_parser as inject_parser
from chatterd import logtap
from chatterd.api import build_app
from chatterd.cli import build_parser as daemon_parser
from chatterd.core.config import LAN
from chatterd.ctl import build_parser as ctl_parser
from chatterd.httpauth import HttpToken
from chatterd.runtime import Options, Runtime
from chatterd.sim import Simulation

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def runtime(loopback: bool = True, kill: str | None = None) -> tuple[Runtime, Simulation]:
    sim = Simulation(seed=5)
    sim.start_cluster(3)
    if kill is not None:
        sim.kill(kill)
        sim.run_for(10)
    node = sim.nodes["n0"]
    rt = Runtime(Options(listen=("127.0.0.1", 0), name=node.name, config=LAN, profile="lan"))
    rt.node = node
    rt.http_token = HttpToken(TOKEN, loopback=loopback)
    return rt, sim


def client(rt: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(rt)), base_url="http://127.0.0.1:2428")


async def test_info_has_every_part() -> None:
    rt, _ = runtime()
    async with client(rt) as c:
        info = (await c.get("/v1/info")).json()
    assert info["node"]["name"] == "n0" and info["protocol"]["version"] == 1 and info["protocol"]["profile"] == "lan"
    assert set(info["config"]) >= {"fanout", "suspect_after", "pushpull_interval", "reap_after", "max_datagram"}
    assert info["members"]["alive"] == 3 and "datagrams_in" in info["counters"]


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"node": 3}',
        '{"node": ""}',
        '{"node": "n1", "prune": "yes"}',
        '{"node": "n1", "extra": 1}',
        '{"node": "' + "x" * 300 + '"}',
    ],
)
async def test_force_leave_refuses_bad_bodies(body: str) -> None:
    rt, _ = runtime()
    async with client(rt) as c:
        r = await c.post("/v1/force-leave", content=body, headers=AUTH)
    assert r.status_code == 400 and set(r.json()) == {"error"}, r.text


async def test_force_leave_needs_the_token_and_refuses_live_unknown_and_self() -> None:
    rt, _ = runtime()
    async with client(rt) as c:
        assert (await c.post("/v1/force-leave", json={"node": "n1"})).status_code == 401
        live = await c.post("/v1/force-leave", json={"node": "n1"}, headers=AUTH)
        assert live.status_code == 409 and "n1 is alive" in live.json()["error"]
        assert (await c.post("/v1/force-leave", json={"node": "zz"}, headers=AUTH)).status_code == 404
        assert (await c.post("/v1/force-leave", json={"node": "n0"}, headers=AUTH)).status_code == 409


async def test_force_leave_of_a_dead_member_then_its_prune() -> None:
    rt, _ = runtime(kill="n2")
    assert rt.node is not None and rt.node.table.members["n2"].state == "dead"
    async with client(rt) as c:
        r = await c.post("/v1/force-leave", json={"node": "n2"}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json() == {"node": "n2", "before": "dead", "left": True, "pruned": False, "members_told": 1}
        r = await c.post("/v1/force-leave", json={"node": "n2", "prune": True}, headers=AUTH)
        assert r.json()["pruned"] is True and r.json()["left"] is False
    assert rt.node.table.get("n2") is None


async def test_monitor_needs_the_token_beyond_loopback_and_checks_its_level() -> None:
    rt, _ = runtime(loopback=False)
    async with client(rt) as c:
        assert (await c.get("/v1/monitor")).status_code == 401
        assert (await c.get("/v1/info")).status_code == 401
        r = await c.get("/v1/monitor?level=loud", headers=AUTH)
        assert r.status_code == 400 and "unknown level" in r.json()["error"]


async def test_monitor_over_the_limit_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    rt, _ = runtime()
    tap = logtap.LogTap()
    monkeypatch.setattr(logtap, "TAP", tap)
    token = trio.lowlevel.current_trio_token()
    subs = [tap.subscribe(20, token) for _ in range(logtap.MAX_MONITORS)]
    for s in subs:
        s.__enter__()
    try:
        async with client(rt) as c:
            r = await c.get("/v1/monitor")
        assert r.status_code == 503 and "too many monitors" in r.json()["error"]
    finally:
        for s in subs:
            s.__exit__(None, None, None)
        logtap.GATE.monitored = logtap.OFF
        logtap.GATE.update()


def _value_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every option that takes a value and has no choices, subcommands' included."""
    out = [a for a in parser._actions if a.option_strings and a.nargs != 0 and not a.choices]
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                out += _value_options(sub)
    return out


def test_help_lists_the_commands_and_shows_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # no wrapping inside a word such as force-leave
    text = daemon_parser().format_help()
    for word in ("roles", "info", "force-leave", "monitor", "role-acquired", "role-lost"):
        assert word in text, word
    for parser in (daemon_parser(), ctl_parser(), inject_parser()):
        for action in _value_options(parser):
            assert action.metavar is not None, f"{action.option_strings}: a placeholder from its name"
    usage = daemon_parser().format_usage()
    assert "--fanout N" in usage and "--suspect-after SECONDS" in usage and "--max-datagram BYTES" in usage
