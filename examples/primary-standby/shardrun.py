"""The sharded scenario (``run.py --shards 8``; tests/examples/test_primary_standby.py): N replicas
(shardnode.py, each with its chatterd) hold every shard; updates to many keys stream in through
the sharded client; the primary of shard-0 is killed with -9 (mode "pid": its PID alone, its
chatterd leaves by itself; "kill9": its process group), only its shards move; it is restarted
while the stream goes on, catches up, and takes back its share. Everything started here is
stopped by PID/PGID on the way out.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from scenario import System  # noqa: E402
from shardclient import ShardClient  # noqa: E402
from shardlog import role_of  # noqa: E402
from sidecar import http_json  # noqa: E402

Table = dict[int, tuple[str, int]]  # shard → (holder, epoch)


class ShardSystem(System):
    script = "shardnode.py"

    def __init__(self, workdir: Path, replicas: int, shards: int, echo: bool = False) -> None:
        self.shards = shards
        super().__init__(workdir, echo, names=[f"r{i}" for i in range(1, replicas + 1)])

    def make_client(self, nodes: list[str]) -> ShardClient:
        return ShardClient(nodes, self.shards)

    def script_args(self) -> list[str]:
        return ["--shards", str(self.shards)]

    def context(self) -> str:
        return f"; roles {self.table()}"

    def table(self) -> Table:
        """Each shard's (holder, epoch) as the first answering chatterd of a running replica sees it."""
        for n in self.names:
            if n not in self.apps or not self.apps[n].running():
                continue
            try:
                rows = {r["role"]: r for r in http_json(f"http://127.0.0.1:{self.port[n]}/v1/roles", timeout=1.0)}
            except (OSError, ValueError, TypeError):
                continue
            return {i: (r["holder"], int(r["epoch"])) for i in range(self.shards) if (r := rows.get(role_of(i)))}
        return {}

    def balanced(self, among: list[str]) -> bool:
        """Every shard held by one of ``among``, each of them holding S // N or S // N + 1."""
        t = self.table()
        if len(t) < self.shards or any(h not in among for h, _ in t.values()):
            return False
        loads = [sum(1 for h, _ in t.values() if h == n) for n in among]
        return min(loads) >= self.shards // len(among) and max(loads) - min(loads) <= 1


@contextlib.contextmanager
def running_shards(workdir: Path, replicas: int, shards: int, echo: bool = False) -> Iterator[ShardSystem]:
    system = ShardSystem(workdir, replicas, shards, echo)
    try:
        for n in system.names:
            system.start(n, bootstrap=True)
        system.wait_for(lambda: system.balanced(system.names), 60, "every shard held, spread evenly")
        yield system
    finally:
        system.stop_all()


class Stream:
    """``clients`` concurrent clients, each sending updates to keys k00001, k00002, ... (with
    several, c1-k00001, ...; spread over the shards by the hash), one every ``interval`` seconds,
    until ``stop`` is set; ``acks`` in order of acknowledgement, each with its ``client``."""

    def __init__(self, system: ShardSystem, interval: float, limit: int, clients: int = 1) -> None:
        self.system = system
        self.interval = interval
        self.limit = limit
        self.acks: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self.run, args=(c, clients), daemon=True) for c in range(clients)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def is_alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def run(self, c: int, clients: int) -> None:
        client = self.system.client if c == 0 else ShardClient(self.system.client.nodes, self.system.shards)
        tag = f"c{c}-" if clients > 1 else ""
        try:
            for i in range(1, self.limit + 1):
                if self.stop.is_set():
                    return
                a = client.update(f"{tag}k{i:05d}", i, uid=f"{tag}u{i:05d}")
                self.acks.append({**a, "client": c})
                if self.system.echo and c == 0 and (i % 20 == 0 or a["attempts"] > 1):
                    retried = f" after {a['attempts']} attempts" if a["attempts"] > 1 else ""
                    stamp = f"shard {a['shard']} seq {a['seq']} epoch {a['epoch']} by {a['by']}"
                    print(f" client | {tag}u{i:05d} acknowledged: {stamp}{retried}", flush=True)
                time.sleep(self.interval)
        except BaseException as e:
            self.error = e

    def wait_acks(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acks) < n:
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline or not self.is_alive():
                raise TimeoutError(f"the stream is stuck at {len(self.acks)} acknowledgements (waiting for {n})")
            time.sleep(0.02)


def check_shard(logs: dict[str, list[list[Any]]], acks: list[dict[str, Any]]) -> dict[str, Any]:
    """One shard: every replica's log [(epoch, seq, id)] against the clients' acknowledgements.
    Each client is sequential: its updates must be in the log in the order it was told, and the
    epochs it was told must never go down (a deposed primary acknowledging after its successor)."""
    ids = [a["id"] for a in acks]
    stamps = {a["id"]: [a["epoch"], a["seq"]] for a in acks}
    by_client: dict[int, list[dict[str, Any]]] = {}
    for a in acks:
        by_client.setdefault(a["client"], []).append(a)
    epochs = [[a["epoch"] for a in mine] for mine in by_client.values()]
    out: dict[str, Any] = {
        "acked": len(ids),
        "identical": len({str(v) for v in logs.values()}) == 1,
        "epochs_monotone": all(e == sorted(e) for e in epochs),
    }
    for name, log in logs.items():
        got = [e[2] for e in log]
        in_order = True
        for mine in by_client.values():
            theirs = {a["id"] for a in mine}
            in_order = in_order and [i for i in got if i in theirs] == [a["id"] for a in mine]
        out[name] = {
            "duplicates": len(got) - len(set(got)),
            "missing": len(set(ids) - set(got)),
            "extra": len(set(got) - set(ids)),
            "in_order": in_order,
            "seqs_contiguous": [e[1] for e in log] == list(range(1, len(log) + 1)),
            "stamps_match": all(stamps[e[2]] == e[:2] for e in log if e[2] in stamps),  # no ack was lost
        }
    return out


def kill(system: ShardSystem, victim: str, mode: str) -> None:
    if mode == "kill9":
        system.apps[victim].crash()  # the replica and its chatterd: kill -9 of the group
    else:
        system.apps[victim].kill_app()  # the replica's PID alone: its chatterd must leave by itself
    if system.echo:
        what = "and its chatterd" if mode == "kill9" else "alone (its PID; its chatterd is not signalled)"
        print(f"   kill | kill -9 of {victim} {what}", flush=True)


def moved(a: Table, b: Table) -> list[int]:
    """The shards whose holder or epoch differs between two tables."""
    return sorted(i for i in b if a.get(i) != b[i])


def kill_phase(system: ShardSystem, victim: str, mode: str) -> dict[str, Any]:
    before = system.table()
    t_kill = time.time()
    kill(system, victim, mode)
    others = [n for n in system.names if n != victim]
    moved_s = system.wait_for(lambda: system.balanced(others), 30, f"{victim}'s shards taken over")
    after = system.table()
    return {"t": t_kill, "before": before, "after": after, "roles_moved_s": round(moved_s, 3)}


def chatterd_to_candidate(log: Path) -> float | None:
    """From a chatterd's log: its last start → the tag that made it a candidate (seconds)."""
    started = tagged = None
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if row.get("event") == "started":
                started, tagged = row["timestamp"], None
            candidacy = any(k.startswith("roles:") for k in row.get("tags", {}))
            if row.get("event") == "tags_changed" and tagged is None and candidacy:
                tagged = row["timestamp"]
    if started is None or tagged is None:
        return None
    t0, t1 = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (started, tagged))
    return round((t1 - t0).total_seconds(), 3)


def restart_phase(system: ShardSystem, victim: str) -> dict[str, Any]:
    with contextlib.suppress(TimeoutError):  # its old chatterd still on the port would fail the restart
        system.wait_for(lambda: not system.apps[victim].group_alive(), 20, f"{victim}'s process group gone")
    before = system.table()
    t_start, t0 = time.time(), time.monotonic()
    system.start(victim, bootstrap=False)
    system.wait_for(lambda: bool((s := system.state(victim)) and s["candidate"]), 40, f"{victim} caught up")
    catch_up_s = time.monotonic() - t0
    share = system.shards // len(system.names)
    system.wait_for(
        lambda: system.balanced(system.names) and sum(h == victim for h, _ in system.table().values()) >= share,
        40,
        f"{victim} takes back its share",
    )
    return {
        "t": t_start,
        "before": before,
        "after": system.table(),
        "catch_up_s": round(catch_up_s, 3),
        "take_back_s": round(time.monotonic() - t0, 3),
        "chatterd_to_candidate_s": chatterd_to_candidate(system.workdir / f"{victim}.chatterd.log"),
    }


def converged(system: ShardSystem) -> dict[str, dict[str, Any]] | None:
    """Every replica's state once all hold the same log for every shard, else None."""
    states: dict[str, dict[str, Any]] = {}
    for n in system.names:
        s = system.state(n)
        if s is None:
            return None
        states[n] = s
    for i in range(system.shards):
        if len({str(s["shards"][str(i)]["log"]) for s in states.values()}) != 1:
            return None
    return states


def first_served(
    acks: list[dict[str, Any]], shards: list[int], by: Callable[[str], bool], since: float
) -> float | None:
    """Seconds from ``since`` until each of ``shards`` acknowledged an update by a holder ``by`` accepts."""
    times = []
    for i in shards:
        t = next((a["acked_at"] for a in acks if a["shard"] == i and a["acked_at"] >= since and by(a["by"])), None)
        if t is None:
            return None
        times.append(t - since)
    return round(max(times), 3) if times else None


def shard_run(
    workdir: Path,
    replicas: int = 3,
    shards: int = 8,
    kill_after: int = 40,
    settle: int = 30,
    after: int = 40,
    interval: float = 0.05,
    echo: bool = False,
    mode: str = "pid",
    clients: int = 1,
) -> dict[str, Any]:
    """Stream updates; kill -9 the primary of shard-0 after ``kill_after`` acknowledgements; once
    ``settle`` more are acknowledged, restart it; stop ``after`` acknowledgements after it has taken
    back its share; compare every replica's copy of every shard with what the client was told.
    ``clients``: that many concurrent clients (the counts are acknowledgements of all of them)."""
    with running_shards(workdir, replicas, shards, echo) as system:
        victim = system.table()[0][0]
        stream = Stream(system, interval, limit=100_000, clients=clients)
        stream.start()
        try:
            stream.wait_acks(kill_after, 60)
            k = kill_phase(system, victim, mode)
            stream.wait_acks(len(stream.acks) + settle, 60)
            r = restart_phase(system, victim)
            stream.wait_acks(len(stream.acks) + after, 60)
        finally:
            stream.stop.set()
            stream.join(40)
        if stream.error is not None:
            raise stream.error
        system.wait_for(lambda: converged(system) is not None, 20, "every replica holds the same shards")
        states = converged(system)
    assert states is not None
    return {**summarize(victim, k, r, stream.acks, states, interval, mode), "clients": clients}


def summarize(
    victim: str,
    k: dict[str, Any],
    r: dict[str, Any],
    acks: list[dict[str, Any]],
    states: dict[str, dict[str, Any]],
    interval: float,
    mode: str,
) -> dict[str, Any]:
    shards = len(next(iter(states.values()))["shards"])
    per_shard = {}
    for i in range(shards):
        logs = {n: s["shards"][str(i)]["log"] for n, s in states.items()}
        per_shard[i] = check_shard(logs, [a for a in acks if a["shard"] == i])
    copies = [c for sh in per_shard.values() for n, c in sh.items() if n in states]
    monotone = all(sh["epochs_monotone"] for sh in per_shard.values())
    held_by = {n: sorted(i for i, (h, _) in r["after"].items() if h == n) for n in states}  # after the restart
    lost = moved(k["before"], k["after"])
    taken = moved(r["before"], r["after"])
    gaps = [  # per client (each is sequential)
        b["acked_at"] - a["acked_at"]
        for c in {a["client"] for a in acks}
        for a, b in itertools.pairwise([a for a in acks if a["client"] == c])
    ]
    data = [{key: v for sh in s["shards"].values() for key, v in sh["data"].items()} for s in states.values()]
    return {
        "mode": mode,
        "replicas": len(states),
        "shards": shards,
        "updates": len(acks),
        "killed": victim,
        "held_before_kill": sorted(i for i, (h, _) in k["before"].items() if h == victim),
        "moved_on_kill": lost,
        "only_killed_moved": all(k["before"][i][0] == victim for i in lost),
        "new_holders": {i: k["after"][i][0] for i in lost},
        "roles_moved_s": k["roles_moved_s"],
        "served_again_s": first_served(acks, lost, lambda by: by != victim, k["t"]),
        "catch_up_s": r["catch_up_s"],
        "take_back_s": r["take_back_s"],
        "chatterd_to_candidate_s": r["chatterd_to_candidate_s"],
        "moved_on_restart": taken,
        "only_to_restarted": all(r["after"][i][0] == victim for i in taken),
        "taken_back_served_s": first_served(acks, taken, lambda by: by == victim, r["t"]),
        "held_after_restart": held_by,
        "max_client_stall_s": round(max(gaps) - interval, 3),
        "retried_updates": sum(a["attempts"] > 1 for a in acks),
        "repeat_answers": sum(bool(a.get("repeat")) for a in acks),
        "duplicates": sum(c["duplicates"] for c in copies),
        "missing": sum(c["missing"] for c in copies),
        "extra": sum(c["extra"] for c in copies),
        "in_order": all(c["in_order"] and c["seqs_contiguous"] for c in copies),
        "stamps_match": all(c["stamps_match"] for c in copies),
        "ack_epochs_monotone": monotone,
        "logs_identical": all(sh["identical"] for sh in per_shard.values()),
        "data_identical": all(d == data[0] for d in data) and len(data[0]) == len(acks),
        "per_shard_acked": {i: sh["acked"] for i, sh in per_shard.items()},
    }
