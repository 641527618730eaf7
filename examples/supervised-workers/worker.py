"""A worker: its work and its chatter node share one trio event loop.

The work loop does a unit of work every 0.1 s. chatterd runs in the same process (the
Runtime, tagged kind=worker) with its watchdog on: if the event loop stalls for --watchdog
seconds, the process exits with status 70. A stalled loop also stops the node's heartbeats,
so the supervisors see the worker die and the leader restarts it.

SIGUSR1 makes the work loop hang (a blocking call that never returns), to show that path.
SIGTERM/SIGINT: graceful leave (the supervisors take that as a deliberate stop).

    python3 worker.py --name w1 --listen 127.0.0.1:7001 --join 127.0.0.1:7101 \
        --data-dir run/w1 --pidfile run/w1.pid --log run/w1.log [--detach]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import sw_members

WORK_PERIOD = 0.1
HANG_SECONDS = 3600.0


async def work(state: dict[str, bool]) -> None:
    import structlog
    import trio

    log = structlog.get_logger("supervised.worker")
    done = 0
    while True:
        if state["hang"]:
            log.warning("hanging", note="blocking the event loop; the watchdog should end this process")
            time.sleep(HANG_SECONDS)  # a stuck synchronous call: nothing else in this loop runs
        done += 1  # the "work"
        if done % 100 == 0:
            log.info("working", units_done=done)
        await trio.sleep(WORK_PERIOD)


async def hang_on_sigusr1(state: dict[str, bool]) -> None:
    import trio

    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            state["hang"] = True


async def run(args: argparse.Namespace) -> None:
    import trio

    from chatterd.runtime import Runtime

    rt = Runtime(sw_members.runtime_options(args, tags={"kind": "worker"}))
    state = {"hang": False}
    async with trio.open_nursery() as nursery:

        async def chatter(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await rt.run(task_status=task_status)
            nursery.cancel_scope.cancel()  # the node left (SIGTERM): the work stops too

        await nursery.start(chatter)
        nursery.start_soon(work, state)
        nursery.start_soon(hang_on_sigusr1, state)


def main() -> int:
    args = sw_members.member_parser("A supervised worker (chatter node + work loop + watchdog).").parse_args()
    if args.detach:
        return sw_members.detach(args, os.path.abspath(__file__))
    sw_members.become_the_instance(args)
    import trio

    from chatterd import logs

    logs.setup(fmt="json")
    trio.run(run, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
