"""The split-brain-safe sequencer: order log, gateway, and the processes around them.

Pieces (see README.md for the why):

* ``OrderLog`` (orderlog.py): the shared order log, one line per record in the seed's format
  (``[ID] epoch=E engine=X ...``) in a file every engine appends to (O_APPEND, under an
  exclusive ``flock``). It is also the fence: before each append the engine reads what the
  others wrote, and an engine whose epoch is lower than the highest epoch in the log is refused
  ("stale"); an order id already in the log is not written again ("duplicate": a retry after a
  lost acknowledgement).
* ``Gateway``: forwards numbered orders one by one to the engine it believes is the primary,
  with no lock and no etcd call on the way; it switches target only when that engine fails or
  answers "not me" (with a hint of who is), and retries the order until some engine accepts.
* ``Etcd``, ``Engine``, ``Sequencer``: start etcd and three engines (an ``engine.py`` app plus
  its ``chatterd --role leader --lock etcd://.../engine/ --expect 3 --lease-ttl 1`` sidecar,
  tagged ``app=URL`` with its app's address, in one process
  group; the app renews the lease, so the role is offered only while the app works) on
  loopback, and stop every one of them by PID / process group. A ``Place`` puts an engine
  elsewhere: its own address and a way to start processes there (a network namespace host in
  tests/hosts/test_sequencer_partition.py).
* ``run_scenario``: stream orders, kill -9 the primary (its process group, or the app's PID
  alone) or SIGSTOP it mid-stream, measure the takeover and check the log (``verify``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:  # run from a fresh clone without installing
    sys.path.insert(0, str(REPO))

from orderlog import OrderLog, read_log, verify  # noqa: E402,F401  (re-exported)

from chatterd.testing import HOST, free_port  # noqa: E402

# The seed's lock key is engine/leader: the sidecars hold the role ``leader`` under the lock
# prefix ``engine/`` (chatterd's key is PREFIX + ROLE, its value the holder's node name), so
# ``etcdctl get engine/leader`` names the primary.
ROLE = "leader"
PREFIX = "engine/"
SERVE_DIR = Path(tempfile.gettempdir()) / "chatter-sequencer"  # run.py --serve's files, gateway.py's default
APP_TAG = "app"  # each sidecar's --tag app=URL: where its engine app takes orders (gateway.py reads it)
LOCK_TTL = 2.0  # s: etcd's smallest lease TTL with its default timing
# s: the sidecar's --lease-ttl. The engine app renews it every APP_LEASE_TTL/3 from its poll
# loop; if the app dies or hangs, its sidecar withholds the role within TTL + TTL/10 and
# releases the etcd lock, so another engine takes over though that sidecar still runs
APP_LEASE_TTL = 1.0


# --- the gateway --------------------------------------------------------------------------------


@dataclass
class Ack:
    order_id: int
    engine: str
    epoch: int
    status: str  # appended | duplicate
    t: float  # time.monotonic() when the gateway got the acknowledgement


@dataclass
class Gateway:
    """Forwards orders to the primary engine it knows of; no lock, no etcd on the hot path.

    ``engines`` maps an engine's name to its app's URL. The target only changes when it fails
    (refused, timed out) or answers 421/409 with a hint of the current holder."""

    engines: dict[str, str]
    timeout: float = 0.5  # s: an engine silent this long (paused, partitioned) is skipped
    acks: list[Ack] = field(default_factory=list)
    switches: list[tuple[float, str]] = field(default_factory=list)
    attempts: int = 0

    def __post_init__(self) -> None:
        self.target = next(iter(self.engines))
        self.stop = threading.Event()
        self._http = httpx.Client(timeout=self.timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def _switch(self, hint: str | None) -> None:
        names = list(self.engines)
        if hint in self.engines and hint != self.target:
            nxt = hint
        else:
            nxt = names[(names.index(self.target) + 1) % len(names)]
        self.target = nxt
        self.switches.append((time.monotonic(), nxt))

    def send(self, order_id: int, give_up: float = 60.0) -> Ack:
        """Retry ``order_id`` until an engine accepts it (an engine that already has it in the
        log says 'duplicate': the order is in, exactly once)."""
        deadline = time.monotonic() + give_up
        misses = 0
        while not self.stop.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order_id}: no engine accepted it within {give_up} s")
            self.attempts += 1
            hint = None
            try:
                r = self._http.post(self.engines[self.target] + "/order", json={"id": order_id})
                body = r.json()
                if r.status_code == 200:
                    ack = Ack(order_id, body["engine"], int(body["epoch"]), body["status"], time.monotonic())
                    self.acks.append(ack)
                    return ack
                hint = body.get("holder")
            except (httpx.HTTPError, ValueError):
                pass
            self._switch(hint)
            misses += 1
            if misses % len(self.engines) == 0:
                time.sleep(0.02)  # nobody accepts right now (an election is on): don't spin
        raise TimeoutError("gateway stopped")

    def stream(self, n: int, interval: float) -> None:
        """Orders 1..n, one every ``interval`` seconds (or slower, while no engine accepts)."""
        nxt = time.monotonic()
        for i in range(1, n + 1):
            self.send(i)
            nxt = max(nxt + interval, time.monotonic() - interval)
            time.sleep(max(0.0, nxt - time.monotonic()))


# --- processes ----------------------------------------------------------------------------------


def _get_json(url: str, timeout: float = 1.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, ValueError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Etcd:
    """A single-member etcd on free loopback ports, stopped by PID."""

    def __init__(self, workdir: Path, client_port: int | None = None) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd is not installed (Debian/Ubuntu: apt-get install etcd-server)")
        self.client_port, self.peer_port = client_port or free_port(), free_port()
        client, peer = f"http://{HOST}:{self.client_port}", f"http://{HOST}:{self.peer_port}"
        self.url = client
        self._out = open(workdir / "etcd.log", "ab")
        argv = [
            binary, "--name", "seq", "--data-dir", str(workdir / "etcd-data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"seq={peer}",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        self.proc = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        wait_for(lambda: _get_json(client + "/health").get("health") == "true", 30, "etcd to be healthy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(15)
        self._out.close()


class Spawn(Protocol):
    """Starts one process: ``argv``, stdout and stderr to ``output``, in ``process_group``
    (subprocess.Popen's: 0 makes a group led by the new process)."""

    def __call__(
        self, argv: Sequence[str], *, output: IO[bytes], env: dict[str, str], process_group: int
    ) -> subprocess.Popen[bytes]: ...


def local_spawn(
    argv: Sequence[str], *, output: IO[bytes], env: dict[str, str], process_group: int
) -> subprocess.Popen[bytes]:
    """A process on this machine."""
    return subprocess.Popen(
        argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, process_group=process_group
    )


@dataclass(frozen=True)
class Place:
    """Where an engine runs: the address its sidecar gossips on and its app takes orders on, and
    how its processes are started there. The default: loopback, on this machine."""

    addr: str = HOST
    spawn: Spawn = local_spawn


class Engine:
    """An engine app and its chatterd sidecar, one process group (the sidecar leads it), so a
    kill -9 or a SIGSTOP hits the whole engine at once."""

    def __init__(self, name: str, workdir: Path, place: Place = Place()) -> None:
        self.name = name
        self.workdir = workdir
        self.place = place
        self.gossip_port, self.app_port = free_port(), free_port()
        self.sidecar: subprocess.Popen[bytes] | None = None
        self.app: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return self.place.addr

    @property
    def sidecar_url(self) -> str:
        """The sidecar's HTTP API: chatterd's default, loopback on the engine's own host (reads
        need no token there), at the gossip port."""
        return f"http://{HOST}:{self.gossip_port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.app_port}"

    def start(self, lock_url: str, join: Engine | None, log_path: Path, expect: int) -> None:
        path = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
        env = {**os.environ, "CHATTER_LOG": "info", "PYTHONPATH": path}
        sidecar_argv = [
            sys.executable, "-m", "chatterd", "--listen", f"{self.addr}:{self.gossip_port}", "--name", self.name,
            "--profile", "local", "--log-format", "json", "--role", ROLE,
            "--lock", lock_url, "--lock-ttl", str(LOCK_TTL), "--lease-ttl", str(APP_LEASE_TTL),
            "--expect", str(expect), "--tag", f"{APP_TAG}={self.url}",
        ]  # fmt: skip
        if join is not None:
            sidecar_argv += ["--join", f"{join.addr}:{join.gossip_port}"]
        app_argv = [
            sys.executable, str(HERE / "engine.py"), "--name", self.name,
            "--host", self.addr, "--port", str(self.app_port),
            "--sidecar", self.sidecar_url, "--log", str(log_path), "--lease-ttl", str(APP_LEASE_TTL),
        ]  # fmt: skip
        with open(self.workdir / f"{self.name}.sidecar.log", "ab") as out:
            self.sidecar = self.place.spawn(sidecar_argv, output=out, env=env, process_group=0)
        with open(self.workdir / f"{self.name}.app.log", "ab") as out:
            self.app = self.place.spawn(app_argv, output=out, env=env, process_group=self.sidecar.pid)

    def _group_alive(self) -> bool:
        # The group id is the sidecar's PID: only signal it while that PID is not reaped (so it
        # cannot have been reused by an unrelated process).
        return self.sidecar is not None and self.sidecar.poll() is None

    def signal(self, sig: int) -> None:
        if self._group_alive():
            assert self.sidecar is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.sidecar.pid, sig)
        elif self.app is not None and self.app.poll() is None:
            self.app.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def kill_app(self) -> None:
        """kill -9 of the engine app's PID alone (a segfault, the OOM killer): its sidecar runs
        on and must give up the role because the app stopped renewing its lease."""
        if self.app is not None and self.app.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.app.kill()
            self.app.wait(15)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self) -> None:
        self.kill()
        for p in (self.app, self.sidecar):
            if p is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(15)

    def state(self) -> dict[str, Any]:
        return _get_json(self.url + "/state", timeout=0.5)

    def events(self) -> list[dict[str, Any]]:
        return _get_json(self.sidecar_url + "/v1/events?since=0")


class Sequencer:
    """etcd (or an existing one at ``etcd_url``) and ``n`` engines under ``workdir``, on loopback,
    or one engine at each of ``places`` (then ``n`` is their number)."""

    def __init__(
        self,
        workdir: Path,
        n: int = 3,
        etcd_url: str | None = None,
        prefix: str = PREFIX,
        places: Sequence[Place] | None = None,
    ) -> None:
        self.workdir = workdir
        self.log_path = workdir / "central_order_book.log"  # the seed's name
        self.etcd: Etcd | None = None
        self.engines: list[Engine] = []
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            if etcd_url is None:
                self.etcd = Etcd(workdir)
                etcd_url = self.etcd.url
            hostport = etcd_url.removeprefix("http://")
            places = list(places) if places is not None else [Place()] * n
            n = len(places)
            for i, place in enumerate(places, start=1):
                e = Engine(f"e{i}", workdir, place)
                self.engines.append(e)  # first: stop() must find it even if start() fails half-way
                e.start(f"etcd://{hostport}/{prefix}", self.engines[0] if i > 1 else None, self.log_path, n)
        except BaseException:
            self.stop()
            raise

    def engine(self, name: str) -> Engine:
        return next(e for e in self.engines if e.name == name)

    def primary(self) -> Engine | None:
        """The one engine accepting orders, or None (none, or more than one, right now)."""
        accepting = []
        for e in self.engines:
            with contextlib.suppress(OSError, ValueError):
                if e.state()["accepting_epoch"] is not None:
                    accepting.append(e)
        return accepting[0] if len(accepting) == 1 else None

    def wait_primary(self, timeout: float = 30.0) -> Engine:
        wait_for(lambda: self.primary() is not None, timeout, "one engine to accept orders")
        p = self.primary()
        assert p is not None
        return p

    def gateway(self) -> Gateway:
        return Gateway({e.name: e.url for e in self.engines})

    def stop(self) -> None:
        for e in self.engines:
            e.stop()
        if self.etcd is not None:
            self.etcd.stop()

    def __enter__(self) -> Sequencer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- one scenario -------------------------------------------------------------------------------

PAUSE_S = 5.0  # s: longer than detection (~1.5 s) plus the lease TTL (2 s)


def run_scenario(
    seq: Sequencer, kind: str, n: int = 400, interval: float = 0.01, at: int | None = None, say: Any = None
) -> dict[str, Any]:
    """Stream orders 1..n through a gateway; when ``at`` have been acknowledged, fail the primary:
    ``kind`` 'kill' (SIGKILL to its process group, app and sidecar), 'kill_app' (SIGKILL to the
    app's PID alone: its sidecar runs on), 'ctrlc' (SIGINT to the group, as Ctrl-C in its
    terminal: the sidecar leaves and gives its etcd key back) or 'pause' (SIGSTOP to the group
    for PAUSE_S, then SIGCONT). Returns the takeover time and the log check."""
    say = say or (lambda _text: None)
    at = at if at is not None else n // 3
    primary = seq.wait_primary()
    gw = seq.gateway()
    gw.target = primary.name
    failure: list[BaseException] = []

    def pump() -> None:
        try:
            gw.stream(n, interval)
        except BaseException as e:  # reported by the caller
            failure.append(e)

    t = threading.Thread(target=pump, name="gateway", daemon=True)
    t.start()
    resumed_wall = None
    try:
        wait_for(lambda: len(gw.acks) >= at or not t.is_alive(), 60, f"{at} orders acknowledged", 0.005)
        victim = gw.acks[-1].engine if gw.acks else primary.name
        old_epoch = gw.acks[-1].epoch if gw.acks else None
        engine = seq.engine(victim)
        t_fail = time.monotonic()
        if kind == "kill":
            engine.kill()
            say(f"kill -9 {victim} (app + sidecar) after order {len(gw.acks)}")
        elif kind == "ctrlc":
            engine.signal(signal.SIGINT)
            say(f"Ctrl-C of {victim} (SIGINT to its process group: app + sidecar) after order {len(gw.acks)}")
        elif kind == "kill_app":
            engine.kill_app()
            say(f"kill -9 {victim}'s app alone (its PID; the sidecar runs on) after order {len(gw.acks)}")
        elif kind == "pause":
            engine.pause()
            say(f"SIGSTOP {victim} (app + sidecar) after order {len(gw.acks)}, for {PAUSE_S:g} s")
            time.sleep(PAUSE_S)
            engine.resume()
            resumed_wall = time.time()
            say(f"SIGCONT {victim}")
        else:
            raise ValueError(kind)
        t.join(120)
        if t.is_alive():
            gw.stop.set()
            t.join(5)
            raise TimeoutError("the gateway did not finish its stream")
        if failure:
            raise failure[0]
        if kind == "pause":
            # Give the woken engine time to notice it lost the role (and to try any order it was
            # handling when it was paused), so the check below sees what it did after waking.
            wait_for(lambda: engine.state()["accepting_epoch"] is None, 10, f"{victim} to stop accepting")
            time.sleep(0.5)
    finally:
        gw.stop.set()
        gw.close()
    takeover = next((a for a in gw.acks if a.t > t_fail and a.engine != victim), None)
    check = verify(seq.log_path, n)
    out: dict[str, Any] = {
        "kind": kind,
        "orders": n,
        "failed": victim,
        "old_epoch": old_epoch,
        "new_primary": takeover.engine if takeover else None,
        "new_epoch": takeover.epoch if takeover else None,
        "takeover_s": round(takeover.t - t_fail, 3) if takeover else None,
        "acked": len(gw.acks),
        "retried_duplicates_acked": sum(1 for a in gw.acks if a.status == "duplicate"),
        "duplicates": len(check["duplicates"]),
        "gaps": len(check["gaps"]),
        "same_epoch_two_engines": len(check["same_epoch_two_engines"]),
        "epoch_regressions": check["epoch_regressions"],
        "ok": check["ok"],
        "check": check,
    }
    if kind == "pause":
        st = engine.state()
        late = [r for r in read_log(seq.log_path) if r["engine"] == victim and resumed_wall and r["t"] > resumed_wall]
        out["woken_appended_after_resume"] = len(late)
        out["woken_stale_rejections"] = st["stale_rejected"]
        lost = [
            ev["payload"].get("reason", "")
            for ev in engine.events()
            if ev["kind"] == "role-lost" and ev["payload"].get("holder") == victim
        ]
        out["woken_role_lost"] = lost
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3), "min": round(min(values), 3)}
