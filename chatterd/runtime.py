"""The trio shell around the protocol core: a UDP socket, the clock, signals, the API.

Everything runs in one nursery. The protocol loop sleeps until the core's next deadline or
until the socket is readable, drains every datagram waiting in the socket (so a stalled
loop reads the heartbeats that queued up before it judges anyone), runs the due timers, and
sends what the core produced. SIGINT/SIGTERM (or ``POST /v1/leave``) trigger a graceful
leave: the core announces it to every live member, the datagrams are sent, and the nursery is
cancelled. With ``--data-dir`` the node's identity is loaded at start and saved as it changes
(chatterd.persistence).
"""

from __future__ import annotations

import importlib
import itertools
import random
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from chatterd import persistence
from chatterd.core import tags, wire
from chatterd.core.config import CHECK_INTERVAL, CHECK_TIMEOUT, EVENT_BUFFER, LEAVE_LINGER, LOCK_TTL, Config
from chatterd.core.events import Delivery, Event, MemberEvent, RoleEvent
from chatterd.core.node import Node, check_tags
from chatterd.core.roles import FAILING_TAG, TAG_PREFIX, role_tags
from chatterd.handlers import DEFAULT_QUEUE, DEFAULT_TIMEOUT, Handlers, HandlerSpec
from chatterd.health import HealthWatch, member_counts
from chatterd.supervision import Check, Watchdog

if TYPE_CHECKING:
    from chatterd.metrics import Metrics

log = structlog.get_logger("chatterd.runtime")
log_events = structlog.get_logger("chatterd.events")

Addr = tuple[str, int]

# Datagrams read per turn of the loop before the timers run. Under overload an unbounded drain
# would never reach them: no heartbeats, no forwarding, and the node would count itself starved.
DRAIN_BATCH = 64


@dataclass
class Options:
    listen: Addr
    name: str
    config: Config
    advertise: Addr | None = None
    seeds: list[Addr] = field(default_factory=list)
    http: Addr | None = None
    event_buffer: int = EVENT_BUFFER
    leave_linger: float = LEAVE_LINGER  # let the leave datagrams go out before the socket closes
    handlers: list[HandlerSpec] = field(default_factory=list)  # --event-handler
    handler_queue: int = DEFAULT_QUEUE
    handler_timeout: float = DEFAULT_TIMEOUT
    tags: dict[str, str] = field(default_factory=dict)  # --tag
    data_dir: Path | None = None  # --data-dir: identity saved here (chatterd.persistence)
    roles: dict[str, int] = field(default_factory=dict)  # --role NAME:PRIORITY (as role: tags)
    expect: int | None = None  # --expect N: hold roles only while a majority of N is alive
    lock: str | None = None  # --lock etcd://HOST:PORT/PREFIX: roles also need an etcd lease
    lock_ttl: float = LOCK_TTL
    check: str | None = None  # --check COMMAND
    check_interval: float = CHECK_INTERVAL
    check_timeout: float = CHECK_TIMEOUT
    watchdog: float | None = None  # --watchdog SECONDS


class Runtime:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.node: Node | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=opts.event_buffer)
        self._event_seq = itertools.count(1)
        self.event_added = trio.Event()
        self.started_at = time.time()
        self.sock: socket.socket | None = None
        self.http_bound: list[str] = []
        self.stats = {"send_errors": 0, "internal_errors": 0}
        self.health_watch = HealthWatch()
        self.metrics: Metrics | None = None  # GET /metrics: created by the API (chatterd.metrics)
        self._cancel: trio.CancelScope | None = None
        self._sleep: trio.CancelScope | None = None  # the protocol loop's wait, cut short by kick()
        self._saved: persistence.Snapshot | None = None  # last snapshot written
        self._tried: persistence.Snapshot | None = None  # last snapshot we tried to write
        self._tried_at = 0.0
        self.check: Check | None = None
        self.watchdog: Watchdog | None = None
        self.lock: Any = None  # chatterd.lock.RoleLock with --lock
        self.handlers = Handlers(
            opts.handlers, name=opts.name, queue_size=opts.handler_queue, timeout=opts.handler_timeout
        )

    # ------------------------------------------------------------------ life cycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        opts = self.opts
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(opts.listen)
        except OSError as e:
            sock.close()
            raise OSError(e.errno, f"cannot listen on {wire.format_addr(opts.listen)}: {e.strerror}") from None
        sock.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
            except OSError:
                pass
        self.sock = sock
        bound = sock.getsockname()[:2]
        advertise = opts.advertise or (bound if bound[0] != "0.0.0.0" else (_local_ip(), bound[1]))
        now = trio.current_time()
        wall_offset = time.time() - now
        rng = random.Random()
        snap = self._load_snapshot()
        seeds = list(opts.seeds)
        if snap is not None:
            seeds += [s for s in persistence.join_seeds(snap, rng, wire.format_addr(advertise)) if s not in seeds]
        self.node = Node(
            opts.config,
            opts.name,
            advertise,
            now=now,
            wall_offset=wall_offset,
            rng=rng,
            seeds=seeds,
            node_id=snap.id if snap is not None else str(uuid.uuid4()),
            incarnation=persistence.next_incarnation(snap, int((now + wall_offset) * 1000)),
            tags=self._initial_tags(snap),
            expect=opts.expect,
            role_lock=opts.lock is not None,
        )
        log.info(
            "started",
            node=opts.name,
            id=self.node.id,
            listen=wire.format_addr(bound),
            advertise=wire.format_addr(advertise),
            seeds=[wire.format_addr(s) for s in seeds],
            incarnation=self.node.inc,
            tags=self.node.tags,
        )
        self._save_snapshot()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._protocol_loop)
                nursery.start_soon(self._signals)
                nursery.start_soon(self.handlers.run, wire.format_addr(advertise))
                if opts.data_dir is not None:
                    nursery.start_soon(self._persist_loop)
                if opts.check is not None:
                    self.check = Check(opts.check, opts.check_interval, opts.check_timeout, self._check_report)
                    nursery.start_soon(self.check.run)
                if opts.watchdog is not None:
                    self.watchdog = Watchdog(opts.watchdog)
                    self.watchdog.start()
                    nursery.start_soon(self.watchdog.beat)
                if opts.lock is not None:
                    from chatterd.lock import RoleLock, parse_lock_url

                    self.lock = RoleLock.for_spec(parse_lock_url(opts.lock), opts.name, ttl=opts.lock_ttl)
                    self.lock.on_acquired = self._lock_acquired
                    self.lock.on_lost = self._lock_lost
                    await nursery.start(self.lock.run)
                await trio.sleep(0)  # let the protocol loop send its joins before the API's imports
                if opts.http is not None:
                    # The API's imports take ~0.3 s of CPU, more on a busy machine: in a thread, so
                    # the protocol loop keeps its timers (it would count the pause as a starvation).
                    await trio.to_thread.run_sync(importlib.import_module, "chatterd.api")
                    from chatterd.api import serve_api

                    self.http_bound = await nursery.start(serve_api, self, opts.http)
                    log.info("http_listening", addr=self.http_bound)
                task_status.started()
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()
            sock.close()
            self._save_snapshot()
            log.info("stopped", node=opts.name)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def leave(self) -> None:
        """Announce a graceful leave, give the datagrams a moment, then stop."""
        assert self.node is not None
        log.info("leaving", node=self.opts.name)
        self.node.leave(trio.current_time())
        self._pump()
        if self.lock is not None:
            with trio.move_on_after(1.0):  # hand the lock over now rather than at lease expiry
                await self.lock.release_all()
        await trio.sleep(self.opts.leave_linger)
        self.stop()

    def kick(self) -> None:
        """Wake the protocol loop now: the core has work from outside the socket (the API)."""
        if self._sleep is not None:
            self._sleep.cancel()

    def update_tags(self, set_: Mapping[str, str], delete: Iterable[str]) -> bool:
        """Change this node's tags (raises TagsError); the loop sends the news at once."""
        node = self.node
        assert node is not None
        changed = node.set_tags(tags.update(node.tags, set_, delete), trio.current_time())
        if changed:
            self.kick()
        return changed

    # ------------------------------------------------------------------ roles: check and lock

    def _initial_tags(self, snap: persistence.Snapshot | None) -> dict[str, str]:
        """--tag replaces saved tags; candidacies come from --role only, never from the file."""
        opts = self.opts
        user = {k: v for k, v in opts.tags.items() if not k.startswith(TAG_PREFIX)}
        if not user and snap is not None:
            user = {k: v for k, v in snap.tags.items() if not k.startswith(TAG_PREFIX) and k != FAILING_TAG}
        return user | role_tags(opts.roles) | {k: v for k, v in opts.tags.items() if k.startswith(TAG_PREFIX)}

    def _check_report(self, reason: str | None) -> None:
        assert self.node is not None
        self.node.set_failing(reason, trio.current_time())
        self._pump()

    def _lock_acquired(self, role: str, epoch: int) -> None:
        assert self.node is not None
        if not self.node.grant_role(role, epoch, trio.current_time()):
            self.lock.unwant(role)  # we stopped wanting it meanwhile
        self._pump()

    def _lock_lost(self, role: str, reason: str) -> None:
        assert self.node is not None
        self.node.revoke_role(role, reason, trio.current_time())
        self.kick()  # the loop re-runs the election: it asks for the lock again if we still win
        self._pump()

    # ------------------------------------------------------------------ persistence

    def _load_snapshot(self) -> persistence.Snapshot | None:
        """The saved identity to reuse, or None (one log line says why not)."""
        data_dir = self.opts.data_dir
        if data_dir is None:
            return None
        path = str(persistence.path_of(data_dir))
        try:
            snap = persistence.load(data_dir)
        except persistence.SnapshotError as e:
            log.warning("state_unusable", path=path, error=str(e), action="starting afresh")
            return None
        if snap is None:
            log.info("state_fresh", path=path, reason="no saved state yet")
            return None
        if snap.name != self.opts.name:
            log.warning(
                "state_unusable",
                path=path,
                error=f"saved for node {snap.name!r}, not {self.opts.name!r}",
                action="starting afresh",
            )
            return None
        if snap.tags and not self.opts.tags:
            try:
                check_tags(self.opts.config, snap.name, snap.tags)
            except tags.TagsError as e:  # e.g. a smaller --max-datagram than last time
                log.warning("state_tags_dropped", path=path, error=str(e))
                snap.tags = {}
        log.info(
            "state_loaded",
            path=path,
            id=snap.id,
            incarnation=snap.incarnation,
            peers=len(snap.peers),
            tags=snap.tags,
        )
        return snap

    def _snapshot(self) -> persistence.Snapshot:
        node = self.node
        assert node is not None
        peers = sorted(
            wire.format_addr(m.addr)
            for m in node.table.members.values()
            if m.name != node.name and m.state in ("alive", "suspect")
        )
        peers = peers[: persistence.MAX_PEERS]
        return persistence.Snapshot(name=node.name, id=node.id, incarnation=node.inc, peers=peers, tags=node.tags)

    def _save_snapshot(self) -> None:
        """Save now if anything changed (at start and at exit: blocking, but small)."""
        if self.opts.data_dir is not None and self.node is not None:
            snap = self._snapshot()
            if snap != self._saved:
                self._write(snap)

    def _write(self, snap: persistence.Snapshot) -> None:
        """Save (at start, at exit, or in a worker thread); a failure is logged, not fatal."""
        assert self.opts.data_dir is not None
        self._tried, self._tried_at = snap, time.monotonic()
        try:
            persistence.save(self.opts.data_dir, snap)
        except OSError as e:
            log.warning("state_save_failed", path=str(persistence.path_of(self.opts.data_dir)), error=str(e))
        else:
            self._saved = snap

    async def _persist_loop(self) -> None:
        """Save a new incarnation at once, other changes (peers) at most every PEERS_INTERVAL
        seconds; a failed write is retried on the same terms."""
        while True:
            await trio.sleep(persistence.CHECK_INTERVAL)
            snap = self._snapshot()
            if snap == self._saved:
                continue
            tried = self._tried
            urgent = tried is None or snap.incarnation != tried.incarnation
            if urgent or time.monotonic() - self._tried_at >= persistence.PEERS_INTERVAL:
                await trio.to_thread.run_sync(self._write, snap)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("signal", signal=signal.Signals(signum).name)
                await self.leave()
                return

    # ------------------------------------------------------------------ protocol loop

    async def _protocol_loop(self) -> None:
        node, sock = self.node, self.sock
        assert node is not None and sock is not None
        bufsize = node.cfg.max_receive + 1
        node.handle_timers(trio.current_time())
        self._pump()
        while True:
            with trio.move_on_at(node.next_deadline()) as self._sleep:
                await trio.lowlevel.wait_readable(sock)
            self._sleep = None
            now = trio.current_time()
            for _ in range(DRAIN_BATCH):  # drain the socket, a bounded batch per turn
                try:
                    data, addr = sock.recvfrom(bufsize)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:  # e.g. ICMP port unreachable surfacing on Linux
                    log.debug("recv_error", error=str(e))
                    continue
                now = trio.current_time()
                try:
                    node.receive(data, addr[:2], now)
                except Exception:
                    self.stats["internal_errors"] += 1
                    log.exception("receive_failed", src=wire.format_addr(addr[:2]))
            try:
                node.handle_timers(now)
            except Exception:
                self.stats["internal_errors"] += 1
                log.exception("timers_failed")
            self._pump()
            await trio.lowlevel.checkpoint_if_cancelled()

    def _pump(self) -> None:
        """Send what the core produced and record its events."""
        node, sock = self.node, self.sock
        assert node is not None and sock is not None
        for data, addr in node.take_outgoing():
            try:
                sock.sendto(data, addr)
            except OSError as e:
                self.stats["send_errors"] += 1
                log.debug("send_failed", dest=wire.format_addr(addr), error=str(e))
        if self.lock is not None:
            for action, role in node.take_lock_requests():
                if action == "want":
                    self.lock.want(role)
                else:
                    self.lock.unwant(role)
        evs = node.take_events()
        if evs:
            for ev in evs:
                self._record(ev)
            self.event_added.set()
            self.event_added = trio.Event()

    def _record(self, ev: Event) -> None:
        received_at = time.time()
        seq = next(self._event_seq)
        if isinstance(ev, Delivery):
            row = {
                "seq": seq,
                "id": ev.id,
                "kind": ev.kind,
                "origin": ev.origin,
                "payload": ev.payload,
                "received_at": received_at,
                "sent_at": ev.ts / 1000,
                "hops": ev.hops,
            }
            if ev.kind == "debug":
                log_events.info("debug_message", text=ev.payload["DebugMessage"]["text"], origin=ev.origin, id=ev.id)
            else:
                log_events.debug("delivered", kind=ev.kind, origin=ev.origin, id=ev.id)
        elif isinstance(ev, RoleEvent):
            row = {
                "seq": seq,
                "id": f"{ev.kind}:{ev.role}:{ev.epoch}",
                "kind": ev.kind,
                "origin": ev.holder,
                "payload": {"role": ev.role, "holder": ev.holder, "epoch": ev.epoch, "reason": ev.reason},
                "received_at": received_at,
            }
        else:
            assert isinstance(ev, MemberEvent)
            if self.metrics is not None:
                self.metrics.observe(ev)  # detection latency histogram
            payload: dict[str, Any] = {
                "name": ev.node,
                "id": ev.id,
                "addr": ev.addr,
                "state": ev.state,
                "incarnation": ev.inc,
                "tags": ev.tags,
            }
            if ev.by is not None:
                payload["by"] = ev.by
            if ev.after_s is not None:
                payload["after_s"] = ev.after_s
            row = {
                "seq": seq,
                "id": f"{ev.kind}:{ev.node}:{ev.inc}",
                "kind": ev.kind,
                "origin": ev.node,
                "payload": payload,
                "received_at": received_at,
            }
            level = "warning" if ev.kind == "member-failed" else "info"
            getattr(log_events, level)(
                ev.kind.replace("-", "_"), node=ev.node, addr=ev.addr, inc=ev.inc, by=ev.by, after_s=ev.after_s
            )
        self.events.append(row)
        self.handlers.submit(row)

    # ------------------------------------------------------------------ views for the API

    def health(self) -> dict[str, Any]:
        node = self.node
        assert node is not None
        now = trio.current_time()
        counts = member_counts(node)
        reasons = self.health_watch.reasons(node, counts, self.stats["internal_errors"], now)
        return {
            "status": "degraded" if reasons else "ok",
            "reasons": reasons,
            "name": node.name,
            "id": node.id,
            "addr": wire.format_addr(node.addr),
            "incarnation": node.inc,
            "tags": node.tags,
            "roles_held": {role: c.epoch for role, c in sorted(node.roles.held.items())},
            "members": counts,
            "uptime_s": round(time.time() - self.started_at, 3),
            "counters": dict(node.stats) | self.stats | self.handlers.stats,
            "now": now,
        }


def os_error_of(e: BaseException) -> OSError | None:
    """The OSError behind a start-up failure, also when a nursery wrapped it in a group."""
    if isinstance(e, OSError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = os_error_of(inner)
            if found is not None:
                return found
    return None


def _local_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
