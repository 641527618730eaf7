"""What worker.py and supervisor.py share: the command line, pidfiles, and --detach.

Every member of the system (worker or supervisor) is started by one command line, and the
same line plus ``--detach`` is the command the leader runs to restart it. ``--detach`` is
"restart" in the systemctl sense: an old instance still running (hung, stopped by SIGSTOP, or
not yet seen dead everywhere) is waited for while it may still exit on its own (its
watchdog), and SIGKILLed as soon as it has not answered direct probes of its health endpoint
for 0.5 s (a stopped process never exits by itself), or after ``--stale-grace`` seconds (3)
in any case; then a new instance starts in its own session, writing to ``--log``, its PID in
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

# The leader restarts a member its failure detector holds dead: silent this long at least
# (chatter's local profile: suspect_after 1 s, then a suspicion of 0.25 s or more).
SILENT_BEFORE_DEAD = 1.0
PROBE_TIMEOUT = 0.25  # one direct probe of an old instance's health endpoint
UNRESPONSIVE_AFTER = 0.5  # an old instance that answers no probe this long is stuck: SIGKILL
AFTER_PID_SLACK = 5.0  # a new instance waits for the old one at most --stale-grace plus this


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
        "--stale-grace", type=float, default=3.0, help="with --detach: longest wait for an old instance to exit"
    )
    p.add_argument("--after-pid", type=int, default=None, help=argparse.SUPPRESS)  # set by --detach, see detach()
    p.add_argument("--restart-pid", type=int, default=None, help=argparse.SUPPRESS)  # the --detach that started it
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


def answers(addr: tuple[str, int], timeout: float = PROBE_TIMEOUT) -> bool:
    """The member at ``addr`` answers GET /v1/health within ``timeout`` (any HTTP status: its
    event loop runs). A stopped or hung process does not: the kernel accepts the connection
    into the listen backlog, but nothing reads it."""
    import http.client

    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        conn.request("GET", "/v1/health")
        conn.getresponse()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def end_old_instance(args: argparse.Namespace, old: int) -> str:
    """Wait for the old instance ``old`` to exit by itself, or SIGKILL it; returns what happened.

    It is SIGKILLed once it has not answered direct probes of its health endpoint for
    ``unresponsive`` seconds (stopped, or hung past its watchdog), or after --stale-grace
    seconds whatever it answers. By the time the leader runs this, the member has been silent
    at least SILENT_BEFORE_DEAD; ``unresponsive`` leaves its own watchdog (--watchdog) that much
    more, so that a hung member still exits by itself (status 70) when its watchdog works."""
    unresponsive = max(UNRESPONSIVE_AFTER, args.watchdog - SILENT_BEFORE_DEAD + UNRESPONSIVE_AFTER)
    start = time.monotonic()
    silent_since: float | None = None
    why = f"still running after --stale-grace {args.stale_grace:g} s"
    while pid_alive(old) and time.monotonic() - start < args.stale_grace:
        probe_at = time.monotonic()
        if answers(args.listen):
            silent_since = None
        else:
            silent_since = probe_at if silent_since is None else silent_since
            if time.monotonic() - silent_since >= unresponsive:
                why = f"no answer to direct probes for {unresponsive:g} s"
                break
        time.sleep(0.02)
    waited = time.monotonic() - start
    if not pid_alive(old):
        return f"old instance {old} exited by itself after {waited:.2f} s"
    with contextlib.suppress(ProcessLookupError):
        os.kill(old, signal.SIGKILL)
    while pid_alive(old):
        time.sleep(0.01)
    return f"old instance {old}: {why}: SIGKILL after {waited:.2f} s"


def detach(args: argparse.Namespace, script: str) -> int:
    """Restart this member in the background (see the module doc); returns an exit status."""
    argv = [sys.executable, script, *(a for a in sys.argv[1:] if a != "--detach")]
    args.pidfile.parent.mkdir(parents=True, exist_ok=True)
    lock_path = args.pidfile.with_name(args.pidfile.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two leaders restarting the same member take turns
        old = running_pid(args.pidfile, args.name)
        if old is not None:
            # it loads its modules meanwhile, then waits for old to be gone (and gives up if this command dies)
            argv += ["--after-pid", str(old), "--restart-pid", str(os.getpid())]
        with open(args.log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        if old is not None:
            print(f"{args.name}: {end_old_instance(args, old)}")
        write_pid(args.pidfile, proc.pid)
    print(f"{args.name}: started, pid {proc.pid}")
    return 0


def become_the_instance(args: argparse.Namespace) -> None:
    """What a member does before it runs: load its heavy modules (trio, chatterd), then, if it
    is a restart started while an old instance still ran (--after-pid), wait for the restart
    command to name it in the pidfile, which that command does once the old instance is gone
    (so the two never share the port or the data dir); then write its pidfile. The loading
    thus overlaps the restart command's wait for the old instance."""
    # what the member runs imports these (the runtime imports its HTTP API when it starts)
    import trio  # noqa: F401

    import chatterd.api
    import chatterd.logs
    import chatterd.runtime  # noqa: F401

    if args.after_pid is not None:
        wait_for_predecessor(args)
    write_pid(args.pidfile, os.getpid())


def wait_for_predecessor(args: argparse.Namespace) -> None:
    """Return once the pidfile names this process and --after-pid is gone; exit 75 if the
    restart command that started it died first (System.stop, a timeout) or too long passes."""
    deadline = time.monotonic() + args.stale_grace + AFTER_PID_SLACK
    while True:
        if read_pid(args.pidfile) == os.getpid() and not pid_alive(args.after_pid):
            return
        gone = os.getppid() != args.restart_pid and read_pid(args.pidfile) != os.getpid()
        if gone or time.monotonic() > deadline:
            why = "the restart command is gone" if gone else f"old instance {args.after_pid} still running"
            print(f"{args.name}: {why}: not starting", file=sys.stderr)
            raise SystemExit(75)
        time.sleep(0.01)


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
