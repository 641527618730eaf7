"""The trio shell around the protocol core: a UDP socket, the clock, signals, the API.

Everything runs in one nursery. The protocol loop (chatterd.protoloop) feeds the core the
datagrams and the time, and sends what it produced. SIGHUP reloads tags and handlers
(chatterd.reload). SIGINT/SIGTERM (or ``POST /v1/leave``) trigger a graceful leave: the core
announces it to every live member, the datagrams are sent, and the nursery is cancelled. With
``--data-dir`` the node's identity is loaded at start and saved as it changes
(chatterd.persistence.Persister). The core's events become rows in chatterd.eventlog, which
serves ``GET /v1/events``, its stream and the event handlers.
"""

from __future__ import annotations

import importlib
import random
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from chatterd import advertise, httplisten, keyfile, persistence, runfile, udp
from chatterd.app import App, app_env
from chatterd.core import tags, wire
from chatterd.core.events import Event, KeysResult, MemberEvent
from chatterd.core.node import Node
from chatterd.errors import exception_of, os_error_of  # noqa: F401  (re-exported: cli, api, tests)
from chatterd.eventlog import EventLog, Row
from chatterd.handlers import Handlers
from chatterd.health import HealthWatch
from chatterd.httpauth import HttpToken
from chatterd.keyops import KeyOps
from chatterd.leases import Leases
from chatterd.loopguard import LoopGuard
from chatterd.options import Options
from chatterd.parent import ParentWatch
from chatterd.protoloop import ProtocolLoop
from chatterd.queryops import QueryOps
from chatterd.reload import Reloader, start_tags
from chatterd.seeds import LOOKUP_TIMEOUT, Discovery
from chatterd.supervision import Check, Watchdog
from chatterd.wirelog import WireLog

if TYPE_CHECKING:
    from chatterd.lock import RoleLock
    from chatterd.metrics import Metrics

log = structlog.get_logger("chatterd.runtime")

Addr = tuple[str, int]


class Runtime:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.node: Node | None = None
        self.eventlog = EventLog(opts.event_buffer)  # GET /v1/events and its stream
        self.persister = persistence.Persister(opts.data_dir, opts.name, opts.config, opts.tags)
        self.started_at = time.time()
        self.sock: socket.socket | None = None
        self.http_sock: socket.socket | None = None  # bound at start, handed to the API's server
        self.http_bound: list[str] = []
        self.http_token: HttpToken | None = None  # the API's bearer token (chatterd.httpauth)
        self.runfile: Path | None = None  # where the operator commands find this node (chatterd.runfile)
        self.stats = {"send_errors": 0, "internal_errors": 0}
        clock = trio.current_time
        self.receive_guard = LoopGuard(log, "receive_failed", clock, fatal=None)  # input-driven: no spin
        self.timers_guard = LoopGuard(log, "timers_failed", clock, fatal=opts.loop_failures_fatal)
        self.health_watch = HealthWatch()
        self.security = keyfile.Security(
            opts.keyring, opts.keyring_file, opts.label, outgoing=opts.encrypt_outgoing, incoming=opts.encrypt_incoming
        )
        self.metrics: Metrics | None = None  # GET /metrics: created by the API (chatterd.metrics)
        self.keyops = KeyOps()  # `chatterd keys` through the API: operations waiting for their end
        self.discovery: Discovery | None = None  # --join names (chatterd.seeds)
        self._saved_seeds: list[Addr] = []  # the peers --data-dir kept: seeds too
        self._cancel: trio.CancelScope | None = None
        self.loop = ProtocolLoop(self)  # the socket and the core's timers (chatterd.protoloop)
        self.check: Check | None = None
        self.watchdog: Watchdog | None = None
        self.lock: RoleLock | None = None  # with --lock
        self.app: App | None = None  # --run: the application, our child (chatterd.app)
        self.leases: Leases | None = None  # --lease-ttl (chatterd.leases)
        self.exit_status = 0  # --run: the application's, when its end ended chatterd
        self.queryops = QueryOps(self)  # `chatterd query`: the API's streams, the query:NAME handlers
        events = [s for s in opts.handlers if not s.query_names]  # the query:NAME ones are queryops'
        self.handlers = Handlers(events, name=opts.name, queue_size=opts.handler_queue, timeout=opts.handler_timeout)
        # RUST_LOG=debug / trace: lines per message and datagram; `on` is False at info.
        self.wirelog = WireLog(opts.name, opts.config, lambda: self.node.sealer if self.node else None)

    # ------------------------------------------------------------------ life cycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        opts = self.opts
        self.sock = sock = udp.bind(opts.listen)
        self.http_sock = httplisten.bind_beside(opts.http, sock)  # before any log line
        bound = udp.from_socket(sock.getsockname())
        found = await self._resolve_seeds(sock)  # DNS seeds, once, before choosing our address
        choice = advertise.choose(bound, opts.seeds + found, opts.advertise)
        node = self.node = self._make_node(choice.addr, found)
        log.info(
            "started",
            node=opts.name,
            id=node.id,
            listen=wire.format_addr(bound),
            advertise=wire.format_addr(choice.addr),
            seeds=[wire.format_addr(s) for s in node.seeds],
            incarnation=node.inc,
            tags=node.tags,
        )
        advertise.log_choice(log, choice, opts.seeds)
        if self.security.check_listen(bound[0]):
            log.warning("plaintext_gossip", listen=wire.format_addr(bound), detail=keyfile.PLAINTEXT_WARNING)
        if keyfile.ACCEPTS_PLAINTEXT_WARNING in self.security.warnings:  # a rolling move: phase 1 or 2
            log.warning("plaintext_accepted", detail=keyfile.ACCEPTS_PLAINTEXT_WARNING)
        self.persister.save_if_changed(node)
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                await self._start_tasks(nursery, node)
                task_status.started()
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()
            sock.close()
            if self.http_sock is not None:
                self.http_sock.close()  # closed already if the API's server took it over
            if self.http_token is not None:
                self.http_token.remove()  # only a token file the node made
            runfile.remove(self.runfile)
            self.persister.save_if_changed(node)
            log.info("stopped", node=opts.name)

    async def _resolve_seeds(self, sock: socket.socket) -> list[Addr]:
        """The addresses of the --join names, as DNS gives them within LOOKUP_TIMEOUT."""
        opts = self.opts
        if not opts.discover:
            return []
        self.discovery = Discovery(opts.discover, v6=sock.family == socket.AF_INET6, interval=opts.retry_interval)
        with trio.move_on_after(LOOKUP_TIMEOUT + 0.5):
            await self.discovery.refresh()
        return list(self.discovery.current or [])

    def _seeds_changed(self, found: list[Addr]) -> None:
        assert self.node is not None
        self.node.set_seeds(list(dict.fromkeys(self.opts.seeds + found + self._saved_seeds)), trio.current_time())
        self.kick()

    def _make_node(self, advertise: Addr, found: list[Addr]) -> Node:
        """The protocol core, from the options, the seeds DNS gave and what --data-dir saved."""
        opts = self.opts
        now = trio.current_time()
        wall_offset = time.time() - now
        rng = random.Random()
        snap = self.persister.load()
        self._saved_seeds = persistence.rejoin_seeds(snap, rng, wire.format_addr(advertise), opts.rejoin)
        seeds = list(dict.fromkeys(opts.seeds + found + self._saved_seeds))
        inc = persistence.next_incarnation(snap, int((now + wall_offset) * 1000))
        return Node(
            opts.config,
            opts.name,
            advertise,
            now=now,
            wall_offset=wall_offset,
            rng=rng,
            seeds=seeds,
            discover=bool(opts.discover),
            node_id=snap.id if snap is not None else str(uuid.uuid4()),
            incarnation=inc,
            tags=start_tags(opts, snap),
            expect=opts.expect,
            role_lock=opts.lock is not None,
            logger=lambda target: structlog.get_logger(target).bind(at=opts.name),
            sealer=self.security.sealer(inc),
        )

    async def _start_tasks(self, nursery: trio.Nursery, node: Node) -> None:
        """Every task of the node, in the nursery that ends with it."""
        opts = self.opts
        self._hold_for_app()  # before any election: the roles wait for the application
        nursery.start_soon(self.loop.run)
        nursery.start_soon(self._signals)
        nursery.start_soon(Reloader(self, opts.launch).run)  # SIGHUP
        nursery.start_soon(self.handlers.run, wire.format_addr(node.addr))
        nursery.start_soon(self.queryops.run, wire.format_addr(node.addr))
        if opts.data_dir is not None:
            nursery.start_soon(self.persister.run, node)
        if self.discovery is not None:  # names again while not joined, or alone
            nursery.start_soon(self.discovery.run, lambda: not node.joined or len(node.ring) <= 1, self._seeds_changed)
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

            self.http_token = HttpToken.for_node(opts.http, opts.http_token_file, opts.data_dir)
            self.http_bound = await nursery.start(partial(serve_api, self, opts.http, sock=self.http_sock))
            self.http_token.publish(self.http_bound)
            self.runfile = runfile.publish_bound(opts.name, self.http_bound, opts.http)  # for chatterd COMMAND
            log.info("http_listening", addr=self.http_bound)
        self._start_app_tasks(nursery)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def leave(self, sig: int = signal.SIGTERM) -> None:
        """Stop the --run application (``sig`` first), announce a graceful leave, give the
        datagrams a moment, then stop."""
        assert self.node is not None
        if self.app is not None:
            await self.app.stop(sig)  # it stops acting before its roles move to another node
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
        self.loop.kick()

    def _pump(self) -> None:
        """Send what the core produced and record its events (chatterd.protoloop)."""
        self.loop.pump()

    def update_tags(self, set_: Mapping[str, str], delete: Iterable[str]) -> bool:
        """Change this node's tags (raises TagsError); the loop sends the news at once."""
        node = self.node
        assert node is not None
        delete = list(delete)
        tags.check_settable([*set_, *delete])
        changed = node.set_tags(tags.update(node.tags, set_, delete), trio.current_time())
        if changed:
            self.kick()
        return changed

    # ------------------------------------------------------------------ roles: check and lock

    def _check_report(self, reason: str | None, source: str = "check") -> None:
        """--check (or --run's application: source "app") failing withholds every candidacy."""
        assert self.node is not None
        self.node.set_failing(reason, trio.current_time(), source)
        self._pump()
        self.kick()

    def _lease_hold(self, role: str, reason: str | None) -> None:
        assert self.node is not None
        self.node.hold_role(role, reason, trio.current_time())
        self._pump()
        self.kick()

    def _hold_for_app(self) -> None:
        """--run, --lease-ttl: the candidacies withheld until the application runs or renews."""
        opts = self.opts
        if opts.run is not None:
            self.app = App(opts.run, opts.restart, {}, lambda r: self._check_report(r, "app"), self._app_ended)
            self.app.hold_until_started()
        if opts.lease_ttl is not None:
            self.leases = Leases([*opts.roles, *opts.role_groups], opts.lease_ttl, self._lease_hold)
            self.leases.hold_all()

    def _start_app_tasks(self, nursery: trio.Nursery) -> None:
        """The lease timer, the parent watch, then the application (the API is up for it)."""
        if self.leases is not None:
            nursery.start_soon(self.leases.run)
        if self.opts.parent_pid is not None:
            nursery.start_soon(ParentWatch(self.opts.parent_pid, self.leave).run)
        if self.app is not None:
            self.app.env = app_env(self.opts.name, self.http_bound, self.http_token)
            nursery.start_soon(self.app.run)

    async def _app_ended(self, status: int) -> None:
        self.exit_status = status
        await self.leave()

    def _lock_acquired(self, role: str, epoch: int) -> None:
        assert self.node is not None and self.lock is not None
        if not self.node.grant_role(role, epoch, trio.current_time()):
            self.lock.unwant(role)  # we stopped wanting it meanwhile
        self._pump()

    def _lock_lost(self, role: str, reason: str) -> None:
        assert self.node is not None
        self.node.revoke_role(role, reason, trio.current_time())
        self.kick()  # the loop re-runs the election: it asks for the lock again if we still win
        self._pump()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("signal", signal=signal.Signals(signum).name)
                await self.leave(signum)
                return

    # ------------------------------------------------------------------ protocol loop

    def _record(self, ev: Event) -> None:
        """One event of the core: into the event log (and its streams), the detection histogram
        and the event handlers' queue; the end of a keyring operation to whoever waits for it."""
        if isinstance(ev, KeysResult):
            self.keyops.resolve(ev)
            return
        if self.queryops.record(ev):
            return
        if self.metrics is not None and isinstance(ev, MemberEvent):
            self.metrics.observe(ev)  # detection latency histogram
        self.handlers.submit(self.eventlog.record(ev))

    # ------------------------------------------------------------------ views for the API

    @property
    def events(self) -> deque[Row]:
        """The rows kept for GET /v1/events, oldest first (the metrics and examples read it)."""
        return self.eventlog.events

    def health(self) -> dict[str, Any]:
        node = self.node
        assert node is not None
        counters = dict(node.stats) | self.stats | self.handlers.stats | self.eventlog.stats | self.queryops.stats
        uptime = time.time() - self.started_at
        report = self.health_watch.report(node, counters, self.stats["internal_errors"], uptime, trio.current_time())
        return report | self.security.health()
