"""Query handlers: ``--event-handler query:NAME=COMMAND`` answers the user queries named NAME
(``chatterd query NAME``), as Serf's query handlers do: COMMAND runs through ``/bin/sh -c``
with the query's payload on stdin, and what it writes on stdout is the response.

    chatterd --event-handler 'query:uptime=uptime -p' --event-handler 'query:load=cat /proc/loadavg'

Its environment has ``CHATTER_EVENT=query``, ``CHATTER_QUERY_NAME``, ``CHATTER_QUERY_ID``,
``CHATTER_QUERY_ORIGIN`` (the asker), ``CHATTER_SELF_NAME`` and ``CHATTER_SELF_ADDR``.

The core hands each query this node's filters pick and that it has a handler for as a
:class:`~chatterd.core.events.QueryRequest`; :meth:`QueryRunner.submit` queues it (a full
queue answers "busy" at once), and QUERY_HANDLERS_AT_ONCE tasks run the handlers, apart from
the event handlers (a slow event handler must not make a query time out). Each runs in its
own process group for the handler timeout or what is left of the query's, whichever is
shorter (then the group is killed and the answer is an error). The response is at most
QUERY_RESPONSE_MAX bytes: a longer one is refused and the answer says so; a handler that
exits non-zero answers with its output and the error "exit status N" (its first stderr line).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import structlog
import trio

from chatterd.core.config import MAX_ANSWERING, QUERY_HANDLERS_AT_ONCE, QUERY_RESPONSE_MAX
from chatterd.core.events import QueryRequest
from chatterd.handlers import ENV_KEYS, SHELL, Capture, HandlerSpec, open_shell, run_child

log = structlog.get_logger("chatterd.handlers")

QUERY_ENV = ("CHATTER_QUERY_NAME", "CHATTER_QUERY_ID", "CHATTER_QUERY_ORIGIN")
_STDERR_KEEP = 512
_PIPE_GRACE = 0.5  # after exit, how long a background child may keep the output pipes open

# The node's answer to a query: (query id, response, error text or "").
Respond = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Outcome:
    """How a handler run ended: its exit status (None: killed at its timeout), the first
    ``limit`` + 1 bytes of its stdout, and the first bytes of its stderr."""

    status: int | None
    stdout: bytes
    stderr: bytes


async def run_command(command: str, stdin: bytes, env: dict[str, str], timeout: float, limit: int) -> Outcome:
    """Run ``command`` through the shell with ``stdin``; kill its process group at ``timeout``.
    Raises OSError when the shell cannot start."""
    proc = await open_shell(command, env)
    out, err = Capture(limit + 1), Capture(_STDERR_KEEP)
    killed, _ = await run_child(proc, stdin, out.drain, err.drain, timeout, _PIPE_GRACE)
    return Outcome(None if killed else proc.returncode, bytes(out.data), bytes(err.data))


def answer_of(outcome: Outcome, timeout: float) -> tuple[str, str]:
    """(response, error) from a handler's outcome."""
    if outcome.status is None:
        return "", f"the handler did not finish within {timeout:.3g} s"
    if len(outcome.stdout) > QUERY_RESPONSE_MAX:
        return "", f"the handler wrote more than {QUERY_RESPONSE_MAX} bytes, over the response limit"
    data = outcome.stdout.decode("utf-8", "replace")
    if outcome.status != 0:
        first = outcome.stderr.decode("utf-8", "replace").strip().splitlines()
        return data, f"exit status {outcome.status}" + (f": {first[0]}" if first else "")
    return data, ""


class QueryRunner:
    """The node's query handlers, by name: a bounded queue and a few tasks that run them."""

    def __init__(
        self, specs: list[HandlerSpec], *, name: str, timeout: float, respond: Respond, queue_size: int = MAX_ANSWERING
    ) -> None:
        self.by_name = {q: s for s in specs for q in sorted(s.query_names)}
        self.name = name
        self.addr = ""
        self.timeout = timeout
        self.respond = respond
        self.stats = {"query_handler_runs": 0, "query_handler_failures": 0, "query_handler_busy": 0}
        self._send, self._recv = trio.open_memory_channel[QueryRequest](queue_size)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.by_name)

    def submit(self, req: QueryRequest) -> None:
        """Queue a query for its handler. Synchronous; never blocks or raises."""
        try:
            self._send.send_nowait(req)
        except trio.WouldBlock:
            self.stats["query_handler_busy"] += 1
            self.respond(req.id, "", "the query handlers of this node are busy")

    async def run(self, addr: str) -> None:
        self.addr = addr
        if not self.by_name:
            return
        log.info("query_handlers_ready", handlers=[f"query:{n}={s.command}" for n, s in sorted(self.by_name.items())])
        async with trio.open_nursery() as nursery:
            for _ in range(QUERY_HANDLERS_AT_ONCE):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        async for req in self._recv:
            try:
                await self._answer(req)
            except Exception:  # a bug here must not stop the node or the other handlers
                self.stats["query_handler_failures"] += 1
                log.exception("query_handler_failed", query=req.name, id=req.id)

    async def _answer(self, req: QueryRequest) -> None:
        spec = self.by_name.get(req.name)
        if spec is None:
            return
        timeout = min(self.timeout, req.timeout)
        keys = {"handler": spec.command, "query": req.name, "id": req.id, "origin": req.origin}
        env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS + QUERY_ENV} | {
            "CHATTER_EVENT": "query",
            "CHATTER_SELF_NAME": self.name,
            "CHATTER_SELF_ADDR": self.addr,
            "CHATTER_QUERY_NAME": req.name,
            "CHATTER_QUERY_ID": req.id,
            "CHATTER_QUERY_ORIGIN": req.origin,
        }
        self.stats["query_handler_runs"] += 1
        started = trio.current_time()
        try:
            outcome = await run_command(spec.command, req.data.encode(), env, timeout, QUERY_RESPONSE_MAX)
        except OSError as e:
            self.stats["query_handler_failures"] += 1
            log.warning("query_handler_failed", **keys, error=f"cannot start {SHELL}: {e}")
            self.respond(req.id, "", "the handler could not start")
            return
        data, error = answer_of(outcome, timeout)
        runtime = round(trio.current_time() - started, 3)
        if error:
            self.stats["query_handler_failures"] += 1
            log.warning("query_handler_failed", **keys, status=outcome.status, runtime_s=runtime, error=error)
        else:
            log.info("query_handler_done", **keys, status=outcome.status, runtime_s=runtime, bytes=len(outcome.stdout))
        self.respond(req.id, data, error)
