"""HashiCorp Serf agents for the comparison (the Debian package ``serf``).

    serf agent -node=NAME -bind=127.0.0.1:PORT -rpc-addr=127.0.0.1:RPCPORT -profile=lan|local
               -event-handler="HANDLER FILE" [-join=127.0.0.1:SEEDPORT]

Two sources of rows, from the same agents:

``main``  the event handler, Serf's documented way of telling an application about events.
          The handler (a /bin/sh script written next to the logs) runs ``date +%s.%N`` first,
          then appends one line per member (``SERF_EVENT``, name) or per user event
          (``SERF_USER_EVENT``, payload) to a file per node process. Serf coalesces member
          events before it runs handlers (the agent sets a 1 s quiescent and 3 s maximum
          coalescing period), so these times include that delay.
``log``   the agent's own INFO log lines (``serf: EventMemberJoin/Failed/Leave: NAME``,
          ``memberlist: Suspect NAME has failed``), stamped with ``time.time()`` by a reader
          thread as each line arrives on the agent's stdout: when Serf's protocol decided,
          before coalescing.

Broadcasts are ``serf event -rpc-addr=... -coalesce=false bench BID``; the origin runs its
handler for its own event too. The graceful stop is SIGINT: a Serf agent leaves on SIGINT and
(by default, ``leave_on_terminate`` false) does not on SIGTERM.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import trio

from benchmarks.peers import ALIVE, FAILED, HOST, LEFT, SUSPECT, USER, LineTail, PeerCluster, PeerNode, Row, as_node
from chatterd.testing import free_port

HANDLER = """#!/bin/sh
# serf event handler for the benchmarks: one line per member or per user event, time first.
t=$(date +%s.%N)
if [ "$SERF_EVENT" = user ]; then
  printf '%s\\tuser\\t%s\\t%s\\n' "$t" "$SERF_USER_EVENT" "$(cat)" >> "$1"
else
  while IFS="$(printf '\\t')" read -r name rest; do
    [ -n "$name" ] && printf '%s\\t%s\\t%s\\n' "$t" "$SERF_EVENT" "$name" >> "$1"
  done
fi
"""

HANDLER_KINDS = {"member-join": ALIVE, "member-failed": FAILED, "member-leave": LEFT}
LOG_PATTERNS = [
    (re.compile(r"serf: EventMemberJoin: (\S+)"), ALIVE),
    (re.compile(r"serf: EventMemberFailed: (\S+)"), FAILED),
    (re.compile(r"serf: EventMemberLeave: (\S+)"), LEFT),
    (re.compile(r"memberlist: Suspect (\S+) has failed"), SUSPECT),
    (re.compile(r"memberlist: Marking (\S+) as failed"), "marked-failed"),
]
USER_EVENT = "bench"


def serf_version() -> str | None:
    exe = shutil.which("serf")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else "unknown"


class SerfNode(PeerNode):
    def __init__(self, cluster: SerfCluster, name: str, port: int, seed: PeerNode | None) -> None:
        super().__init__(name, port)
        self.cluster = cluster
        self.rpc_port = free_port()
        self.seed = seed
        self.tails: dict[int, LineTail] = {}  # pid → its handler file
        self.log_rows: list[Row] = []  # filled by the reader thread
        self.log_lock = threading.Lock()
        self.agent_running = threading.Event()  # the current process printed "Serf agent running!"

    @property
    def rpc_addr(self) -> str:
        return f"{HOST}:{self.rpc_port}"

    def start(self) -> None:
        c = self.cluster
        events = c.log_dir / f"{c.system}-{self.name}.{self.new_life()}.events"
        argv = [
            "serf",
            "agent",
            f"-node={self.name}",
            f"-bind={self.addr}",
            f"-rpc-addr={self.rpc_addr}",
            f"-profile={c.profile}",
            "-log-level=info",
            f"-event-handler={c.handler} {events}",
        ]
        if self.seed is not None:
            argv.append(f"-join={self.seed.addr}")
        self.agent_running = threading.Event()
        self._out = open(c.log_dir / f"{c.system}-{self.name}.log", "ab")  # closed in reap()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.tails[self.proc.pid] = LineTail(events)
        threading.Thread(target=self._read_log, args=(self.proc, self._out, self.agent_running), daemon=True).start()

    def _read_log(self, proc: subprocess.Popen[bytes], out: IO[bytes], agent_running: threading.Event) -> None:
        """Stamp each line of the agent's output as it arrives; keep a copy in the log file."""
        assert proc.stdout is not None
        pid = proc.pid
        for raw in proc.stdout:
            t = time.time()
            try:
                out.write(f"{t:.6f} ".encode() + raw)
                out.flush()
            except ValueError:  # the file was closed by reap(): the node is being stopped
                pass
            line = raw.decode(errors="replace")
            if "Serf agent running" in line:  # printed before it joins
                self.up[pid] = t
                agent_running.set()
            for pattern, kind in LOG_PATTERNS:
                m = pattern.search(line)
                if m:
                    with self.log_lock:
                        self.log_rows.append(Row(self.name, pid, t, kind, m.group(1), "log"))
                    break
        proc.stdout.close()


class SerfCluster(PeerCluster):
    graceful_signal = signal.SIGINT
    sources = ("main", "log")
    suspect_sources = ("log",)  # event handlers are not told about suspicions

    def __init__(self, log_dir: Path, profile: str = "lan") -> None:
        super().__init__(log_dir)
        self.profile = profile
        self.system = "serf" if profile == "lan" else f"serf-{profile}"
        self.handler = log_dir / "serf-handler.sh"
        self.handler.write_text(HANDLER)
        self.handler.chmod(0o755)

    def new_node(self, name: str, seed: PeerNode | None) -> SerfNode:
        return SerfNode(self, name, free_port(), seed)

    async def ready(self, node: PeerNode) -> bool:
        return node.running() and as_node(node, SerfNode).agent_running.is_set()

    async def poll(self) -> None:
        for node in self.nodes:
            s = as_node(node, SerfNode)
            with s.log_lock:
                self.rows.extend(s.log_rows)
                s.log_rows.clear()
            for pid, tail in s.tails.items():
                for line in tail.read():
                    row = _handler_row(s.name, pid, line)
                    if row is not None:
                        self.rows.append(row)

    async def broadcast(self, node: PeerNode, bid: str) -> str | None:
        argv = ["serf", "event", f"-rpc-addr={as_node(node, SerfNode).rpc_addr}", "-coalesce=false", USER_EVENT, bid]
        proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        if proc.returncode == 0:
            return None
        return (proc.stderr or proc.stdout).decode().strip() or f"exit status {proc.returncode}"

    async def counters(self, node: PeerNode) -> dict[str, int]:
        """Suspicions raised and deaths declared by this process, counted from its log."""
        pid = node.pid
        mine = [r for r in self.rows if r.source == "log" and r.observer == node.name and r.life == pid]
        return {
            "suspicions": sum(r.kind == SUSPECT for r in mine),
            "deaths": sum(r.kind == "marked-failed" for r in mine),
        }


def _handler_row(observer: str, pid: int, line: str) -> Row | None:
    parts = line.split("\t")
    if len(parts) < 3:
        return None
    try:
        t = float(parts[0])
    except ValueError:
        return None
    if parts[1] == "user":
        if parts[2] != USER_EVENT or len(parts) < 4:
            return None
        return Row(observer, pid, t, USER, parts[3].strip())
    kind = HANDLER_KINDS.get(parts[1])
    return None if kind is None else Row(observer, pid, t, kind, parts[2].strip())
