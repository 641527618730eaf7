"""``--run COMMAND``: chatterd runs the application as its child, and the node's roles live and
die with it.

Gossip tells the cluster when a chatterd dies; it cannot tell when only the application a
chatterd serves died (kill -9, a segfault, the OOM killer). With ``--run`` the application is
chatterd's child: started through ``/bin/sh -c`` once the node and its API are up, in its own
process group, stdout and stderr inherited, with ``CHATTER_NODE``, ``CHATTER_HTTP_ADDR`` and
``CHATTER_HTTP_TOKEN`` in its environment. Until it runs, and from the moment it exits
(whatever the status or signal), the node withdraws every candidacy (hold "app", core:
Election.set_failing), so its roles go to a standby at once. Then, per ``--restart``:

- ``no`` (default): chatterd leaves gracefully and exits with the child's status (128+N for
  signal N);
- ``on-failure``: the child is started again if it exited non-zero or by a signal, after a
  back-off (BACKOFF_MIN doubling to BACKOFF_MAX, back to BACKOFF_MIN once a child ran
  BACKOFF_RESET seconds); a clean exit is handled as with ``no``;
- ``always``: started again whatever the status.

A restarted child offers the candidacies again. Stopping chatterd (SIGTERM, SIGINT, ``POST
/v1/leave``) signals the child's process group first and waits for it to exit (STOP_GRACE
seconds, then SIGKILL), before the graceful leave. The child gets ``PR_SET_PDEATHSIG``
(SIGTERM) on Linux: should chatterd itself be killed, the application is told at once rather
than keep acting as primary while the role moves to another node.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog
import trio

from chatterd.httpauth import ENV_TOKEN, HttpToken

log = structlog.get_logger("chatterd.app")

RESTART_POLICIES = ("no", "on-failure", "always")
BACKOFF_MIN = 0.5  # seconds before the first restart
BACKOFF_MAX = 10.0  # the back-off doubles up to this
BACKOFF_RESET = 30.0  # a child that ran this long restarts after BACKOFF_MIN again
STOP_GRACE = 10.0  # seconds a stopping child has between SIGTERM and SIGKILL
NOT_STARTED = "application not started"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux (looked up once, in the parent: a forked child only calls it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The process's own symbols (libc's among them): find_library would run ldconfig.
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[..., int] = libc.prctl
        return fn
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux only;
    elsewhere a no-op). Returns whether it was set."""
    if _PRCTL is None:
        return False
    return _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def exit_status(returncode: int) -> int:
    """A shell's view of a child's end: its exit status, or 128+N for signal N."""
    return 128 - returncode if returncode < 0 else returncode


def describe(returncode: int) -> str:
    """Why the application is no longer running, for the hold's reason and the logs."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"application killed by {name}"
    return f"application exited with status {returncode}"


def wants_restart(policy: str, returncode: int) -> bool:
    """Whether ``--restart policy`` starts the application again after this end."""
    return policy == "always" or (policy == "on-failure" and returncode != 0)


class Child(Protocol):
    """A running application: the real one (ShellChild) or a test's fake."""

    pid: int

    async def wait(self) -> int: ...  # its returncode: the exit status, or -N for signal N

    def signal(self, sig: int) -> None: ...  # to its whole process group


class _ForkThread:
    """One thread, for the life of chatterd, that forks the applications. PR_SET_PDEATHSIG
    fires when the *thread* that forked the child exits, and trio.open_process forks in a
    worker thread that exits once idle (10 s): the application would get SIGTERM then."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _serve(self) -> None:
        while True:
            self._jobs.get()()

    async def popen(self, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="chatterd-app-fork", daemon=True)
            self._thread.start()
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[subprocess.Popen[bytes] | BaseException] = []

        def job() -> None:
            try:
                box.append(subprocess.Popen(argv, **options))
            except BaseException as e:  # handed to the trio task, raised there
                box.append(e)
            token.run_sync_soon(done.set)

        self._jobs.put(job)
        with trio.CancelScope(shield=True):  # a child forked meanwhile must not go unnoticed
            await done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


_FORKER = _ForkThread()


class ShellChild:
    """The application: ``/bin/sh -c COMMAND`` in a process group of its own (pgid = pid)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid

    @classmethod
    async def start(cls, command: str, env: Mapping[str, str]) -> ShellChild:
        parent = os.getpid()

        def preexec() -> None:  # in the forked child, before exec: no allocation-heavy work
            set_parent_death_signal(signal.SIGTERM)
            if os.getppid() != parent:  # chatterd died between the fork and the prctl
                os._exit(1)

        popen = await _FORKER.popen(
            ["/bin/sh", "-c", command], env=dict(env), stdin=subprocess.DEVNULL, preexec_fn=preexec, process_group=0
        )
        return cls(popen)

    async def wait(self) -> int:
        """Its returncode, waiting on a pidfd (Linux) or, elsewhere, in a worker thread."""
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            return await trio.to_thread.run_sync(self.popen.wait, abandon_on_cancel=True)
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        return self.popen.wait()

    def signal(self, sig: int) -> None:
        if self.popen.returncode is not None:
            return  # reaped: its pid may be another process's now
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:  # the group is gone: nothing left to stop
            pass


Spawn = Callable[[str, Mapping[str, str]], Awaitable[Child]]


def app_env(name: str, http_bound: Sequence[str], token: HttpToken | None) -> dict[str, str]:
    """The application's environment: chatterd's, with the node's name, its API's address
    (HOST:PORT, as ``chatterd roles --http`` takes it) and the API's token (for the leases)."""
    env = dict(os.environ) | {"CHATTER_NODE": name}
    if http_bound:
        env["CHATTER_HTTP_ADDR"] = http_bound[0].removeprefix("http://")
    if token is not None:
        env[ENV_TOKEN] = token.token
    return env


class App:
    """Runs the application, restarts it per policy, and reports whether the node may hold
    roles: ``report(reason)`` withholds every candidacy, ``report(None)`` offers them again.
    ``on_exit(status)`` is awaited when chatterd should leave and exit with ``status``."""

    def __init__(
        self,
        command: str,
        restart: str,
        env: Mapping[str, str],
        report: Callable[[str | None], None],
        on_exit: Callable[[int], Awaitable[None]],
        spawn: Spawn = ShellChild.start,
        grace: float = STOP_GRACE,
    ) -> None:
        if restart not in RESTART_POLICIES:
            raise ValueError(f"unknown restart policy {restart!r}")
        self.command = command
        self.restart = restart
        self.env = dict(env)
        self.report = report
        self.on_exit = on_exit
        self.spawn = spawn
        self.grace = grace
        self.child: Child | None = None
        self.starts = 0
        self.last_returncode: int | None = None
        self.stopping = False
        self._pause: trio.CancelScope | None = None  # the back-off sleep, cut short by stop()
        self._ended = trio.Event()  # the current child exited (or none ever ran)

    def hold_until_started(self) -> None:
        """Withhold the candidacies now: the node must not claim a role before the app runs."""
        self.report(NOT_STARTED)

    async def run(self) -> None:
        """Start the application, wait for its end, withdraw the roles at once, then restart it
        or have chatterd leave (per the policy); ends when stop() is called."""
        backoff = BACKOFF_MIN
        while not self.stopping:
            started = trio.current_time()
            returncode = await self._run_once()
            if self.stopping:
                return
            if not wants_restart(self.restart, returncode):
                log.info("app_done", command=self.command, status=exit_status(returncode))
                await self.on_exit(exit_status(returncode))
                return
            if trio.current_time() - started >= BACKOFF_RESET:
                backoff = BACKOFF_MIN
            log.info("app_restarting", command=self.command, in_s=backoff)
            with trio.CancelScope() as self._pause:
                await trio.sleep(backoff)
            self._pause = None
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _run_once(self) -> int:
        """One life of the application: its returncode (127 when it cannot be started)."""
        self._ended = trio.Event()
        try:
            child = await self.spawn(self.command, self.env)
        except OSError as e:
            reason = f"cannot start application: {e.strerror or e}"
            log.error("app_start_failed", command=self.command, error=str(e))
            self.report(reason)
            self._ended.set()
            return 127
        self.child = child
        self.starts += 1
        log.info("app_started", command=self.command, pid=child.pid, starts=self.starts)
        self.report(None)
        try:
            returncode = await child.wait()
        finally:
            self.child = None
            self._ended.set()
        self.last_returncode = returncode
        reason = describe(returncode)
        (log.info if self.stopping else log.warning)("app_exited", pid=child.pid, reason=reason)
        self.report(reason)  # the roles go at once, before anything else
        return returncode

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """Pass ``sig`` to the application and wait for it to exit (SIGKILL after the grace);
        no restart follows. Returns at once when no child runs."""
        self.stopping = True
        if self._pause is not None:
            self._pause.cancel()
        child = self.child
        if child is None:
            return
        log.info("app_stopping", pid=child.pid, signal=signal.Signals(sig).name, grace_s=self.grace)
        child.signal(sig)
        with trio.move_on_after(self.grace) as scope:
            await self._ended.wait()
        if scope.cancelled_caught:
            log.warning("app_killed", pid=child.pid, after_s=self.grace)
            child.signal(signal.SIGKILL)
            with trio.move_on_after(self.grace):
                await self._ended.wait()
