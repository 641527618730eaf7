"""Start and stop the primary-standby system (replicas r1 and r2, each with its chatterd) as
real processes on 127.0.0.1; used by run.py, measure.py and tests/examples/test_primary_standby.py.

``failover_run`` is the scenario the seed system left unfinished: updates stream in while the
primary is killed with -9 (mode "kill9": its process group, the replica and its chatterd, a
machine crash; mode "pid": the replica's PID alone, whose chatterd, started with
--exit-with-parent, then leaves by itself), the standby is promoted and keeps serving, then
the old primary is restarted, rejoins as standby and catches up. Everything started here is
stopped by PID/PGID on the way out.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from client import Client  # noqa: E402
from sidecar import App, free_port, http_json  # noqa: E402

NAMES = ("r1", "r2")


class System:
    """The replicas (``script``, each with its chatterd) on free ports of 127.0.0.1, each
    joining the others; shardrun.ShardSystem runs the sharded ones the same way."""

    script = "replica.py"

    def __init__(self, workdir: Path, echo: bool = False, names: Sequence[str] = NAMES) -> None:
        self.workdir = workdir
        self.echo = echo
        self.names = list(names)
        self.port = {n: free_port() for n in self.names}  # chatterd (UDP gossip + HTTP API)
        self.http = {n: free_port() for n in self.names}  # the service
        self.apps: dict[str, App] = {}
        self.client = self.make_client([f"127.0.0.1:{self.port[n]}" for n in self.names])

    def make_client(self, nodes: list[str]) -> Any:
        return Client(nodes)

    def script_args(self) -> list[str]:
        """The script's own arguments, beyond name, ports, seeds, log and --bootstrap."""
        return []

    def context(self) -> str:
        """What a timed-out wait adds to its message."""
        return ""

    def _out(self, app: str) -> Callable[[str], None]:
        def out(line: str) -> None:
            if self.echo:
                print(f"{app:>7} | {line}", flush=True)

        return out

    def start(self, name: str, bootstrap: bool) -> App:
        argv = [str(HERE / self.script), "--name", name, "--port", str(self.port[name])]
        argv += ["--http-port", str(self.http[name]), *self.script_args()]
        for other in self.names:
            if other != name:
                argv += ["--join", f"127.0.0.1:{self.port[other]}"]
        argv += ["--log", str(self.workdir / f"{name}.chatterd.log")]
        if bootstrap:
            argv.append("--bootstrap")
        app = App(name, argv, self._out(name))
        app.start()
        self.apps[name] = app
        return app

    def state(self, name: str) -> dict[str, Any] | None:
        try:
            st: dict[str, Any] = http_json(f"http://127.0.0.1:{self.http[name]}/state", timeout=2.0)
            return st
        except (OSError, ValueError):
            return None

    def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        start = time.monotonic()
        while not check():
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for: {what}{self.context()}")
            time.sleep(0.05)
        return time.monotonic() - start

    def primary(self) -> str | None:
        found = self.client.find_primary()
        return found[0] if found else None

    def stop_all(self) -> None:
        for app in self.apps.values():
            app.interrupt()
        for app in self.apps.values():
            app.stop()


@contextlib.contextmanager
def running_system(workdir: Path, echo: bool = False) -> Iterator[System]:
    system = System(workdir, echo)
    try:
        for n in NAMES:
            system.start(n, bootstrap=True)
        system.wait_for(lambda: system.primary() is not None, 40, "a primary elected")
        yield system
    finally:
        system.stop_all()


class Sampler(threading.Thread):
    """Polls both replicas' /state: how many say they are primary at once (split brain)."""

    def __init__(self, system: System) -> None:
        super().__init__(daemon=True)
        self.system = system
        self.done = threading.Event()
        self.max_primaries = 0
        self.samples = 0

    def run(self) -> None:
        while not self.done.is_set():
            states = [self.system.state(n) for n in NAMES]
            primaries = sum(1 for s in states if s and s["role"] == "primary")
            self.max_primaries = max(self.max_primaries, primaries)
            self.samples += 1
            time.sleep(0.05)


def check_log(log: list[list[Any]], ids: list[str]) -> dict[str, Any]:
    """A replica's log [(epoch, seq, id)] against the client's acknowledged ids, in order."""
    got = [e[2] for e in log]
    seqs = [e[1] for e in log]
    epochs = [e[0] for e in log]
    return {
        "duplicates": len(got) - len(set(got)),
        "missing": len(set(ids) - set(got)),
        "extra": len(set(got) - set(ids)),
        "in_order": got == ids,
        "seqs_contiguous": seqs == list(range(1, len(seqs) + 1)),
        "epochs_monotone": epochs == sorted(epochs),
    }


MODES = ("kill9", "pid", "ctrlc")


def failover_run(
    workdir: Path,
    updates: int = 120,
    kill_after: int = 40,
    interval: float = 0.05,
    echo: bool = False,
    mode: str = "kill9",
) -> dict[str, Any]:
    """Stream ``updates`` updates; kill -9 the primary after ``kill_after`` acknowledgements
    (``mode`` "kill9": its process group; "pid": its PID alone; "ctrlc": SIGINT); restart it once the stream is
    done and nothing of its old process group is left; wait until it is in sync. Returns the
    figures, among them ``chatterd_exited_s``: the kill → no process of the old primary's group
    seen left, checked once the stream is done (for "pid", its chatterd has left by itself;
    ``None`` if still there 20 s after the kill)."""
    assert mode in MODES, mode
    acks: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    kill_at: dict[str, float] = {}
    with running_system(workdir, echo=echo) as system:
        old = system.primary()
        assert old is not None
        new = next(n for n in NAMES if n != old)
        system.wait_for(lambda: bool((s := system.state(new)) and s["candidate"]), 20, f"{new} ready")
        sampler = Sampler(system)
        sampler.start()

        def stream() -> None:
            try:
                for i in range(1, updates + 1):
                    a = system.client.update(f"u{i:05d}", i, uid=f"u{i:05d}")
                    acks.append(a)
                    if echo and (i % 10 == 0 or a["attempts"] > 1):
                        retried = f" after {a['attempts']} attempts" if a["attempts"] > 1 else ""
                        stamp = f"seq {a['seq']} epoch {a['epoch']} by {a['by']}"
                        print(f" client | u{i:05d} acknowledged: {stamp}{retried}", flush=True)
                    if i == kill_after:
                        kill_at["t"] = time.time()
                        if mode == "kill9":
                            system.apps[old].crash()  # the primary and its chatterd: kill -9 of the group
                        elif mode == "pid":
                            system.apps[old].kill_app()  # the replica's PID alone: its chatterd must leave
                        else:
                            system.apps[old].interrupt()  # Ctrl-C: the replica stops its chatterd (a leave)
                        if echo:
                            what = {
                                "kill9": "kill -9 of {} (the primary) and its chatterd",
                                "pid": "kill -9 of {} (the primary) alone (its PID; its chatterd is not signalled)",
                                "ctrlc": "Ctrl-C of {} (the primary): it stops its chatterd, a graceful leave",
                            }[mode]
                            print(f"   kill | {what.format(old)}")
                    time.sleep(interval)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=stream, daemon=True)
        t.start()
        t.join(updates * interval + 60)
        assert not t.is_alive(), "the client stream hangs"
        if errors:
            raise errors[0]
        gone_at: float | None = None
        with contextlib.suppress(TimeoutError):  # its old chatterd still on the port would fail the restart
            remaining = max(0.0, kill_at["t"] + 20 - time.time())
            system.wait_for(lambda: not system.apps[old].group_alive(), remaining, f"{old}'s process group gone")
            gone_at = time.time()
        t_restart = time.monotonic()
        system.start(old, bootstrap=False)

        def caught_up() -> bool:
            s = system.state(old)
            return bool(s and s["in_sync"] and s["candidate"] and s["seq"] == updates)

        system.wait_for(caught_up, 40, f"{old} caught up")
        catch_up_s = time.monotonic() - t_restart  # includes starting the process and its chatterd
        sampler.done.set()
        sampler.join(5)
        final_new, final_old = system.state(new), system.state(old)
        primary_after = system.primary()
    assert final_new is not None and final_old is not None
    ids = [a["id"] for a in acks]
    first_new = next(a for a in acks if a["by"] == new)
    times = [a["acked_at"] for a in acks]
    return {
        "mode": mode,
        "updates": updates,
        "killed": old,
        "promoted": new,
        "takeover_s": round(first_new["acked_at"] - kill_at["t"], 3),
        "max_client_stall_s": round(max(b - a for a, b in itertools.pairwise(times)) - interval, 3),
        "retried_updates": sum(a["attempts"] > 1 for a in acks),
        "repeat_answers": sum(bool(a.get("repeat")) for a in acks),
        "catch_up_s": round(catch_up_s, 3),
        "chatterd_exited_s": None if gone_at is None else round(gone_at - kill_at["t"], 3),
        "primary_after_restart": primary_after,
        "max_primaries_at_once": sampler.max_primaries,
        "promoted_replica": check_log(final_new["log"], ids),
        "restarted_replica": check_log(final_old["log"], ids),
        "logs_identical": final_new["log"] == final_old["log"],
        "data_identical": final_new["data"] == final_old["data"] and len(final_new["data"]) == updates,
    }
