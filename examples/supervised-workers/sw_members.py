"""What worker.py and supervisor.py share: the command line, pidfiles, and --detach.

Every member of the system (worker or supervisor) is started by one command line, and the
same line plus ``--detach`` is the command the leader runs to restart it. ``--detach`` is
"restart" in the systemctl sense: an old instance still running (hung, or not yet seen dead
everywhere) gets ``--stale-grace`` seconds to exit on its own (its watchdog), then SIGKILL;
then a new instance starts in its own session, writing to ``--log``, its PID in
``--pidfile``, and the command returns at once.

This module imports nothing heavy: ``--detach`` must be quick, it runs inside the leader's
restart path.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def member_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--name", required=True, help="member name, unique in the system")
    p.add_argument("--listen", type=parse_addr, required=True, metavar="HOST:PORT", help="chatter UDP (and HTTP) port")
    p.add_argument("--join", type=parse_addr, action="append", default=[], metavar="HOST:PORT", help="repeatable")
    p.add_argument("--data-dir", type=Path, required=True, help="chatter identity kept across restarts")
    p.add_argument("--pidfile", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True, help="with --detach: where the new instance writes")
    p.add_argument("--watchdog", type=float, default=1.0, help="exit 70 if the event loop stalls this long (s)")
    p.add_argument("--detach", action="store_true", help="(re)start this member in the background and return")
    p.add_argument(
        "--stale-grace", type=float, default=3.0, help="with --detach: seconds an old instance gets to exit by itself"
    )
    return p


# ------------------------------------------------------------------ processes


def pid_alive(pid: int) -> bool:
    """True if the process runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(pidfile: Path, pid: int) -> None:
    tmp = pidfile.with_name(pidfile.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, pidfile)


def is_member_process(pid: int, name: str) -> bool:
    """The PID runs one of this example's scripts for member ``name`` (not a reused PID)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(pid)  # no /proc: trust the pidfile
    if b"--detach" in argv:
        return False
    return any(a.endswith((b"worker.py", b"supervisor.py")) for a in argv) and name.encode() in argv


def running_pid(pidfile: Path, name: str) -> int | None:
    """The PID of the running instance of ``name`` according to its pidfile, or None."""
    pid = read_pid(pidfile)
    if pid is not None and pid_alive(pid) and is_member_process(pid, name):
        return pid
    return None


def detach(args: argparse.Namespace, script: str) -> int:
    """Restart this member in the background (see the module doc); returns an exit status."""
    argv = [sys.executable, script, *(a for a in sys.argv[1:] if a != "--detach")]
    args.pidfile.parent.mkdir(parents=True, exist_ok=True)
    lock_path = args.pidfile.with_name(args.pidfile.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two leaders restarting the same member take turns
        old = running_pid(args.pidfile, args.name)
        if old is not None:
            deadline = time.monotonic() + args.stale_grace
            while pid_alive(old) and time.monotonic() < deadline:
                time.sleep(0.02)
            if pid_alive(old):
                print(f"{args.name}: old instance {old} still running: SIGKILL", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old, signal.SIGKILL)
                while pid_alive(old):
                    time.sleep(0.01)
        with open(args.log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        write_pid(args.pidfile, proc.pid)
    print(f"{args.name}: started, pid {proc.pid}")
    return 0


def runtime_options(args: argparse.Namespace, **kw: Any) -> Any:
    """chatterd runtime options for this member (local profile, HTTP API on the same port)."""
    from chatterd.core.config import PROFILES
    from chatterd.runtime import Options

    return Options(
        listen=args.listen,
        name=args.name,
        config=PROFILES["local"],
        seeds=[s for s in args.join if s != args.listen],
        http=args.listen,
        data_dir=args.data_dir,
        watchdog=args.watchdog,
        **kw,
    )
