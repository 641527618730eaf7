"""A supervisor: a chatter node that is a candidate for role ``leader``, plus a reconcile loop.

Every supervisor runs the loop; only the one holding ``leader`` acts. Every RECONCILE_PERIOD
it reads its own node's member table (the rows of GET /v1/members) and restarts each member
named in the restart file (--restart-file, JSON {"restart": {NAME: COMMAND}}) that is

- ``dead`` (the failure detector's verdict: a kill -9, a crash, a watchdog exit), or
- absent from the table ABSENT_GRACE seconds after this supervisor started.

A member that left gracefully (SIGTERM) was stopped on purpose and is left alone. The
command comes from the leader's own file, never from gossip: a member cannot make the leader
run anything. Because the loop looks at the table and not only at new events, a new leader
also restarts the members that died before or during its takeover.

Each restart is announced to every node as a user message
``{"restart": {"name", "incarnation", "by", "epoch"}}`` (epoch: the leader's fencing token).
Every supervisor remembers the announcements it sees, so a new leader does not restart a
member that its predecessor restarted a moment ago (unless it is still dead RETRY_AFTER
seconds later, or came back and died again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import sw_members

if TYPE_CHECKING:
    from chatterd.runtime import Runtime

ROLE = "leader"
RECONCILE_PERIOD = 0.1
ABSENT_GRACE = 10.0  # a configured member never seen this long after start is started
RETRY_AFTER = 8.0  # a restarted member still dead after this is restarted again
RESTART_TIMEOUT = 20.0  # the restart command must return by then (it starts the member in the background)


class Reconciler:
    def __init__(self, rt: Runtime, commands: dict[str, str]) -> None:
        import structlog

        self.rt = rt
        self.commands = commands
        self.log = structlog.get_logger("supervised.supervisor")
        self.leading = False
        self.restarted: dict[str, tuple[float, int | None]] = {}  # name -> (when, incarnation it had)
        self.seen_seq = 0

    def _note_announcements(self, now: float) -> None:
        new = []
        for row in reversed(self.rt.events):  # the rows since the last look, newest first
            if row["seq"] <= self.seen_seq:
                break
            new.append(row)
        for row in reversed(new):
            self.seen_seq = row["seq"]
            body = row["payload"].get("restart") if row["kind"] == "user" else None
            if isinstance(body, dict) and body.get("name") in self.commands:
                self.restarted[body["name"]] = (now, body.get("incarnation"))

    async def run(self) -> None:
        import trio

        from chatterd import views

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(RECONCILE_PERIOD)
                node = self.rt.node
                assert node is not None
                now = trio.current_time()
                self._note_announcements(now)
                role = next((r for r in views.role_rows(node, now) if r["role"] == ROLE), None)
                held = bool(role and role["held_here"])
                if held != self.leading:
                    self.leading = held
                    self.log.info("leading" if held else "standing_by", epoch=role["epoch"] if role else None)
                if not held:
                    continue
                assert role is not None
                members = {m["name"]: m for m in views.member_rows(node, now)}
                for name, command in self.commands.items():
                    if name == node.name:
                        continue
                    m = members.get(name)
                    if m is None:
                        if now - started < ABSENT_GRACE:
                            continue
                        why, inc = "absent", None
                    elif m["state"] == "dead":
                        why, inc = "dead", m["incarnation"]
                    else:
                        continue
                    prev = self.restarted.get(name)
                    if prev is not None and prev[1] == inc and now - prev[0] < RETRY_AFTER:
                        continue  # restarted already (by us or a predecessor): give it time
                    self.restarted[name] = (now, inc)
                    node.inject(
                        {"restart": {"name": name, "incarnation": inc, "by": node.name, "epoch": role["epoch"]}},
                        now,
                    )
                    self.rt.kick()
                    self.log.warning("restarting", member=name, why=why, incarnation=inc, epoch=role["epoch"])
                    nursery.start_soon(self._restart, name, command)

    async def _restart(self, name: str, command: str) -> None:
        import trio

        with trio.move_on_after(RESTART_TIMEOUT) as scope:
            proc = await trio.run_process(
                ["/bin/sh", "-c", command], check=False, capture_stdout=True, capture_stderr=True, stdin=b""
            )
        if scope.cancelled_caught:
            self.log.error("restart_timed_out", member=name, timeout=RESTART_TIMEOUT)
        elif proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            self.log.error("restart_failed", member=name, status=proc.returncode, error=err[-1:] or None)
        else:
            self.log.info("restarted", member=name, output=proc.stdout.decode(errors="replace").strip())


async def run(args: argparse.Namespace, commands: dict[str, str]) -> None:
    import trio

    from chatterd.runtime import Runtime

    rt = Runtime(sw_members.runtime_options(args, roles={ROLE: 0}, tags={"kind": "supervisor"}))
    async with trio.open_nursery() as nursery:

        async def chatter(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await rt.run(task_status=task_status)
            nursery.cancel_scope.cancel()

        await nursery.start(chatter)
        nursery.start_soon(Reconciler(rt, commands).run)


def main() -> int:
    p = sw_members.member_parser("A supervisor: candidate for role leader; the leader restarts dead members.")
    p.add_argument("--restart-file", type=Path, required=True, help='JSON {"restart": {NAME: COMMAND}}')
    args = p.parse_args()
    if args.detach:
        return sw_members.detach(args, os.path.abspath(__file__))
    sw_members.become_the_instance(args)
    commands = json.loads(args.restart_file.read_text())["restart"]
    import trio

    from chatterd import logs

    logs.setup(fmt="json")
    trio.run(run, args, commands)
    return 0


if __name__ == "__main__":
    sys.exit(main())
