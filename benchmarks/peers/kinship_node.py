"""One kinship node for the benchmarks: one process, its events as JSON lines, a control socket.

    python -m benchmarks.peers.kinship_node --name n1 --bind 127.0.0.1:PORT --seed 127.0.0.1:SEEDPORT
        --events FILE --control SOCKET [--preset lan|local]

It runs ``kinship.Cluster`` (asyncio) with the preset's defaults, unencrypted
(``insecure_plaintext``, as the other systems in the comparison run without encryption), and
appends one JSON object per line to FILE, ``t`` first (``time.time()`` when the event was
read from kinship's stream):

    {"t": ..., "kind": "starting"|"ready"|"alive"|"suspect"|"failed"|"left"|"user"|"sent"|"lost"|..., "subject": ...}

``alive`` rows with ``"snapshot": true`` are the members already present when the event
stream was opened, just after the start-up join (kinship joins the seeds inside ``start()``,
before a subscription can exist).

The control socket (a Unix stream socket, one command per line, one answer line):
``broadcast BID`` records a ``sent`` row and gossips BID with ``Cluster.broadcast``;
``stats`` answers ``Cluster.stats()`` as JSON. SIGTERM or SIGINT: ``leave()`` then ``close()``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from typing import IO, Any

import kinship

KINDS: dict[type, str] = {
    kinship.MemberJoined: "alive",
    kinship.MemberRecovered: "alive",
    kinship.MemberSuspect: "suspect",
    kinship.MemberDead: "failed",
    kinship.MemberLeft: "left",
    kinship.MemberUpdated: "updated",
    kinship.NameConflict: "conflict",
}


class Recorder:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def emit(self, kind: str, subject: str, **extra: Any) -> None:
        self.out.write(json.dumps({"t": time.time(), "kind": kind, "subject": subject, **extra}) + "\n")
        self.out.flush()


async def watch(cluster: kinship.Cluster, stream: kinship.EventStream, rec: Recorder) -> None:
    async for ev in stream:
        if isinstance(ev, kinship.UserMessage):
            if ev.broadcast:
                rec.emit("user", ev.data.decode(errors="replace"), sender=ev.sender.name)
        elif isinstance(ev, kinship.EventsLost):
            rec.emit("lost", "", count=ev.count)
        else:
            rec.emit(KINDS.get(type(ev), type(ev).__name__), ev.member.name)


async def control(cluster: kinship.Cluster, rec: Recorder, path: str) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                cmd, _, arg = line.decode().strip().partition(" ")
                try:
                    if cmd == "broadcast":
                        rec.emit("sent", arg)
                        await cluster.broadcast(arg.encode())
                        answer = "ok"
                    elif cmd == "stats":
                        answer = json.dumps(dataclasses.asdict(cluster.stats()))
                    else:
                        answer = f"error unknown command {cmd!r}"
                except kinship.KinshipError as e:
                    answer = f"error {type(e).__name__}: {e}"
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    if os.path.exists(path):
        os.unlink(path)
    return await asyncio.start_unix_server(handle, path)


async def run(args: argparse.Namespace) -> int:
    preset = kinship.Config.local if args.preset == "local" else kinship.Config.lan
    cfg = preset(name=args.name, bind=args.bind, seeds=args.seed, insecure_plaintext=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with open(args.events, "a") as out:
        rec = Recorder(out)
        cluster = kinship.Cluster(cfg)
        rec.emit("starting", args.name)  # loaded; start() binds and joins
        await cluster.start()
        stream = cluster.events()
        for m in cluster.members():
            if m.name != args.name and m.state == kinship.State.ALIVE:
                rec.emit("alive", m.name, snapshot=True)
        server = await control(cluster, rec, args.control)
        watcher = asyncio.create_task(watch(cluster, stream, rec))
        rec.emit("ready", args.name, addr=cluster.local.addr, pid=os.getpid())
        try:
            await stop.wait()
            rec.emit("leaving", args.name)
            await cluster.leave()
        finally:
            server.close()
            await cluster.close()
            watcher.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers.kinship_node", description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--bind", required=True, help="host:port")
    p.add_argument("--seed", action="append", default=[], help="host:port of a seed; repeatable")
    p.add_argument("--events", required=True, help="append the events here, as JSON lines")
    p.add_argument("--control", required=True, help="path of the control socket")
    p.add_argument("--preset", choices=["lan", "local"], default="lan")
    args = p.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
