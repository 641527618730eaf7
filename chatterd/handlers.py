"""Event handlers: run a command for each event, as ``serf agent -event-handler`` does.

    chatterd --event-handler member-failed=/usr/local/bin/page-oncall \\
             --event-handler user:deploy=./deploy.sh --event-handler ./log-everything.sh

Each ``--event-handler [FILTER=]COMMAND`` runs COMMAND through ``/bin/sh -c`` for every event
its filter matches. FILTER is an event type, ``user:NAME`` for user events named NAME, ``*``,
or a comma list of them; without a filter every event matches. The text before the first
``=`` is a filter when it contains no white space and no shell punctuation (``echo a=b`` is a
command; ``X=1 cmd`` is an error: write ``*=X=1 cmd``). ``query:NAME`` (alone, or with other
query names) makes COMMAND the responder of the user queries named NAME: chatterd.queryhandlers
runs it, and its stdout is the response (as Serf's query handlers).

The handler reads the event row (as ``/v1/events`` shows it) as one JSON line on stdin and
finds ``CHATTER_EVENT``, ``CHATTER_SELF_NAME``, ``CHATTER_SELF_ADDR``, ``CHATTER_USER_EVENT``
(user events), ``CHATTER_MEMBER_NAME`` / ``CHATTER_MEMBER_ADDR`` (member events) and
``CHATTER_ROLE`` / ``CHATTER_EPOCH`` (role-acquired, role-lost) in its environment.

Handlers never hold up the protocol: :meth:`Handlers.submit` only puts the event in a bounded
queue (a full queue drops it, counts it and logs ``handler_queue_full``), and one trio task
runs the handlers, in event order, one at a time, each in its own process group with a
timeout (the whole group is killed with SIGKILL when it expires). Each run is logged
(``handler_done`` / ``handler_failed``: exit status, runtime, first lines of stdout/stderr).
An event matched by several filters of one handler runs that handler once; the core reports
each member state change once, so handlers fire once per change.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from chatterd.core.config import HANDLER_QUEUE, HANDLER_TIMEOUT
from chatterd.core.payloads import user_event_name
from chatterd.core.query import QueryError
from chatterd.core.userquery import check_name

log = structlog.get_logger("chatterd.handlers")

MEMBER_KINDS = (
    "member-join",
    "member-leave",
    "member-failed",
    "member-update",
    "member-recover",
    "member-suspect",
    "member-alive",
)
DELIVERY_KINDS = ("debug", "device", "view", "user")
ROLE_KINDS = ("role-acquired", "role-lost")
EVENT_TYPES = (*MEMBER_KINDS, *DELIVERY_KINDS, *ROLE_KINDS)

DEFAULT_QUEUE = HANDLER_QUEUE
DEFAULT_TIMEOUT = HANDLER_TIMEOUT
SHELL = "/bin/sh"

# Variables we set; inherited values are removed so that a handler never sees stale ones.
ENV_KEYS = (
    "CHATTER_EVENT",
    "CHATTER_SELF_NAME",
    "CHATTER_SELF_ADDR",
    "CHATTER_USER_EVENT",
    "CHATTER_MEMBER_NAME",
    "CHATTER_MEMBER_ADDR",
    "CHATTER_ROLE",
    "CHATTER_EPOCH",
)

_CAPTURE_BYTES = 8192  # kept of each of stdout and stderr; the rest is read and discarded
_LOG_LINES = 5
_LOG_LINE_CHARS = 300
_PIPE_GRACE = 1.0  # after exit, how long a background child may keep the output pipes open
_DROP_LOG_INTERVAL = 1.0  # at most one handler_queue_full line per second
# Before the first "=": a filter if it has no white space or shell punctuation.
_FILTER_LIKE = re.compile(r"[^\s'\"`$;|&<>()\\]*")


class HandlerSpecError(ValueError):
    """An --event-handler value that cannot be used."""


@dataclass(frozen=True)
class HandlerSpec:
    """One --event-handler: which events (``None`` = all) and the command to run."""

    command: str
    types: frozenset[str] | None = None  # event types; "user" means every user event
    user_names: frozenset[str] = frozenset()  # from user:NAME
    query_names: frozenset[str] = frozenset()  # from query:NAME: answers those queries, no event

    def matches(self, kind: str, user_name: str | None = None) -> bool:
        if self.types is None or kind in self.types:
            return True
        return kind == "user" and user_name is not None and user_name in self.user_names

    @property
    def filter_text(self) -> str:
        if self.query_names:
            return ",".join(f"query:{n}" for n in sorted(self.query_names))
        if self.types is None:
            return "*"
        return ",".join([*sorted(self.types), *(f"user:{n}" for n in sorted(self.user_names))])


def parse_spec(text: str) -> HandlerSpec:
    """``[FILTER=]COMMAND`` → HandlerSpec; raises HandlerSpecError with a one-line reason."""
    head, sep, rest = text.partition("=")
    if sep and _FILTER_LIKE.fullmatch(head):
        filt, command = head, rest
    else:
        filt, command = None, text
    if not command.strip():
        raise HandlerSpecError(f"empty command in {text!r}")
    if filt is None:
        return HandlerSpec(command)
    types: set[str] = set()
    names: set[str] = set()
    queries: set[str] = set()
    every = False
    for item in filt.split(","):
        if item.startswith("query:"):
            queries.add(_query_name(item[len("query:") :], filt))
        elif item == "*":
            every = True
        elif item in EVENT_TYPES:
            types.add(item)
        elif item.startswith("user:"):
            name = item[len("user:") :]
            if not name:
                raise HandlerSpecError(f"empty user event name in filter {filt!r} (write user:NAME)")
            names.add(name)
        else:
            what = "empty event type" if not item else f"unknown event type {item!r}"
            hint = ""
            if "," not in filt and not item.startswith(("member", "user")):
                hint = f"; to run a command containing '=' for every event, write '*={text}'"
            raise HandlerSpecError(
                f"{what} in filter {filt!r} (expected {', '.join(EVENT_TYPES)}, user:NAME, query:NAME or *{hint})"
            )
    if queries:
        if types or names or every:
            raise HandlerSpecError(f"query:NAME and event types in one filter {filt!r}: give each its own handler")
        return HandlerSpec(command, frozenset(), query_names=frozenset(queries))
    if every:
        return HandlerSpec(command)
    return HandlerSpec(command, frozenset(types), frozenset(names))


def _query_name(name: str, filt: str) -> str:
    try:
        return check_name(name)
    except QueryError as e:
        raise HandlerSpecError(f"{e} in filter {filt!r}") from None


class Capture:
    """The first ``limit`` bytes of a pipe; reads it to the end so the child never blocks on it
    (event handlers here, query handlers in chatterd.queryhandlers)."""

    def __init__(self, limit: int = _CAPTURE_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()

    async def drain(self, stream: trio.abc.ReceiveStream | None) -> None:
        if stream is None:
            return
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while chunk := await stream.receive_some(65536):
                room = self.limit - len(self.data)
                if room > 0:
                    self.data += chunk[:room]

    def lines(self) -> list[str] | None:
        lines = self.data.decode("utf-8", "replace").splitlines()[:_LOG_LINES]
        return [line[:_LOG_LINE_CHARS] for line in lines] or None


class Handlers:
    """The node's event handlers: a bounded queue in front of one task that runs them."""

    def __init__(
        self,
        specs: list[HandlerSpec],
        *,
        name: str,
        queue_size: int = DEFAULT_QUEUE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.specs = list(specs)
        self.name = name
        self.addr = ""
        self.queue_size = queue_size
        self.timeout = timeout
        self.stats = {"handler_runs": 0, "handler_failures": 0, "handler_timeouts": 0, "handler_dropped": 0}
        self._send, self._recv = trio.open_memory_channel[tuple[dict[str, Any], tuple[HandlerSpec, ...]]](queue_size)
        self._last_drop_log = float("-inf")
        self._drops_unlogged = 0

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    def submit(self, row: dict[str, Any]) -> None:
        """Queue an event row for the handlers it matches. Synchronous; never blocks or raises."""
        if not self.specs:
            return
        try:
            kind = row["kind"]
            user_name = user_event_name(row["payload"]) if kind == "user" else None
            matched = tuple(s for s in self.specs if s.matches(kind, user_name))
            if matched:
                self._send.send_nowait((row, matched))
        except trio.WouldBlock:
            self._dropped(row)
        except Exception:  # called from the protocol loop: never let a handler problem reach it
            log.exception("handler_submit_failed", id=row.get("id"))

    def _dropped(self, row: dict[str, Any]) -> None:
        """Count a dropped event; log at most one line per second (a flood must not flood the log)."""
        self.stats["handler_dropped"] += 1
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL:
            log.warning(
                "handler_queue_full",
                kind=row["kind"],
                id=row["id"],
                queue_size=self.queue_size,
                dropped=self._drops_unlogged,
                dropped_total=self.stats["handler_dropped"],
            )
            self._last_drop_log = now
            self._drops_unlogged = 0

    async def run(self, addr: str) -> None:
        """Run queued events' handlers, in order, one at a time, until cancelled."""
        self.addr = addr
        base_env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
        if self.specs:  # none yet: a SIGHUP may bring some (chatterd.reload); idle, this task costs nothing
            log.info("handlers_ready", handlers=[f"{s.filter_text}={s.command}" for s in self.specs])
        async for row, matched in self._recv:
            data = (json.dumps(row) + "\n").encode()
            env = base_env | self._env(row)
            for spec in matched:
                try:
                    await self._run_one(spec, row, env, data)
                except Exception:  # a bug here must not stop the node or the other handlers
                    self.stats["handler_failures"] += 1
                    log.exception("handler_failed", handler=spec.command, kind=row["kind"], id=row["id"])

    def _env(self, row: dict[str, Any]) -> dict[str, str]:
        kind = row["kind"]
        env = {"CHATTER_EVENT": kind, "CHATTER_SELF_NAME": self.name, "CHATTER_SELF_ADDR": self.addr}
        if kind == "user":
            env["CHATTER_USER_EVENT"] = user_event_name(row["payload"])
        elif kind in MEMBER_KINDS:
            env["CHATTER_MEMBER_NAME"] = str(row["origin"])
            env["CHATTER_MEMBER_ADDR"] = str(row["payload"].get("addr", ""))
        elif kind in ROLE_KINDS:
            env["CHATTER_ROLE"] = str(row["payload"]["role"])
            env["CHATTER_EPOCH"] = str(row["payload"]["epoch"])
        return env

    async def _run_one(self, spec: HandlerSpec, row: dict[str, Any], env: dict[str, str], data: bytes) -> None:
        self.stats["handler_runs"] += 1
        keys = {"handler": spec.command, "kind": row["kind"], "id": row["id"], "seq": row["seq"]}
        started = trio.current_time()
        try:
            proc = await open_shell(spec.command, env)
        except OSError as e:
            self.stats["handler_failures"] += 1
            log.warning("handler_failed", **keys, error=f"cannot start {SHELL}: {e}")
            return
        out, err = Capture(), Capture()
        timed_out, ended = await run_child(proc, data, out.drain, err.drain, self.timeout, _PIPE_GRACE)
        runtime = ended - started
        status = proc.returncode
        result: dict[str, Any] = {
            "status": status,
            "runtime_s": round(runtime, 3),
            "pid": proc.pid,
            "stdout": out.lines(),
            "stderr": err.lines(),
        }
        if status is not None and status < 0:
            with contextlib.suppress(ValueError):
                result["signal"] = signal.Signals(-status).name
        if timed_out:
            self.stats["handler_failures"] += 1
            self.stats["handler_timeouts"] += 1
            log.warning("handler_failed", **keys, **result, timed_out=True, timeout_s=self.timeout)
        elif status != 0:
            self.stats["handler_failures"] += 1
            log.warning("handler_failed", **keys, **result)
        else:
            log.info("handler_done", **keys, **result)


async def open_shell(command: str, env: dict[str, str]) -> trio.Process:
    """``command`` through the shell, its three pipes open, in a process group of its own (a
    timeout kills its children too). Raises OSError when the shell cannot start."""
    return await trio.lowlevel.open_process(
        [SHELL, "-c", command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )


Drain = Callable[[trio.abc.ReceiveStream | None], Awaitable[None]]


async def run_child(
    proc: trio.Process, stdin: bytes, out: Drain, err: Drain, timeout: float, grace: float
) -> tuple[bool, float]:
    """Feed ``stdin``, drain stdout and stderr with ``out`` and ``err``, wait up to ``timeout``
    and kill the process group past it; the pipes are closed and the child reaped whatever
    happens (cancelled: killed first). Returns (killed, when it ended, trio time)."""
    killed = False
    ended = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_feed, proc.stdin, stdin)
            nursery.start_soon(out, proc.stdout)
            nursery.start_soon(err, proc.stderr)
            with trio.move_on_after(timeout):
                await proc.wait()
            if proc.returncode is None:
                killed = True
                _kill_group(proc)
                await proc.wait()
            ended = trio.current_time()
            # A background child may hold the pipes open: read what it wrote, then stop.
            nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, ended + grace)
    finally:
        if proc.returncode is None:  # cancelled: the node is stopping
            _kill_group(proc)
        with trio.CancelScope(shield=True):
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    await stream.aclose()
            await proc.wait()
    return killed, ended


async def _feed(stream: trio.abc.SendStream | None, data: bytes) -> None:
    """Write the event to the handler's stdin and close it (a handler need not read it)."""
    if stream is None:
        return
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)
        await stream.aclose()


def _kill_group(proc: trio.Process) -> None:
    """SIGKILL the handler's process group (its id is the handler's PID), if it still runs.

    Safe against PID reuse: until we reap the handler (``returncode`` does), its PID is ours.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
