"""Event handlers: --event-handler parsing, the bounded queue, and runs of real /bin/sh commands."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from chatterd.cli import build_parser
from chatterd.handlers import EVENT_TYPES, Handlers, HandlerSpec, HandlerSpecError, parse_spec

WAIT = 20.0  # generous: a few /bin/sh runs on a loaded machine


def row(seq: int, kind: str = "user", payload: dict[str, Any] | None = None, origin: str = "n1") -> dict[str, Any]:
    if payload is None:
        payload = {"deploy": {"v": seq}} if kind == "user" else {"name": origin, "addr": "127.0.0.1:9"}
    return {"seq": seq, "id": f"id{seq}", "kind": kind, "origin": origin, "payload": payload, "received_at": 1.0}


async def until(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    with trio.fail_after(WAIT):
        while True:
            ok = check()
            if not isinstance(ok, bool):
                ok = await ok
            if ok:
                return
            await trio.sleep(0.02)


# ---------------------------------------------------------------------------- parsing


def test_no_filter_means_every_event() -> None:
    spec = parse_spec("./notify.sh --all")
    assert spec == HandlerSpec("./notify.sh --all")
    assert all(spec.matches(kind, "x") for kind in EVENT_TYPES)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("echo a=b", "echo a=b"),  # white space before the "=": the whole text is the command
        ("/usr/bin/env X=1 ./h.sh", "/usr/bin/env X=1 ./h.sh"),
        ("python3 -c 'print(1==1)'", "python3 -c 'print(1==1)'"),
        ("*=X=1 ./h.sh", "X=1 ./h.sh"),  # explicit "every event"
        ("member-failed,*=./h.sh", "./h.sh"),
    ],
)
def test_commands_with_equals_signs(text: str, command: str) -> None:
    spec = parse_spec(text)
    assert spec.command == command
    assert spec.types is None


def test_single_filter() -> None:
    spec = parse_spec("member-failed=./page.sh a=b")
    assert spec.command == "./page.sh a=b"
    assert spec.matches("member-failed")
    assert not spec.matches("member-join")
    assert not spec.matches("user", "member-failed")


def test_comma_list_and_user_names() -> None:
    spec = parse_spec("member-join,member-leave,user:deploy=cat")
    assert spec.command == "cat"
    assert spec.matches("member-join") and spec.matches("member-leave")
    assert spec.matches("user", "deploy")
    assert not spec.matches("user", "other")
    assert not spec.matches("member-failed")
    assert spec.filter_text == "member-join,member-leave,user:deploy"


def test_user_matches_every_user_event() -> None:
    spec = parse_spec("user=cat")
    assert spec.matches("user", "deploy") and spec.matches("user", "user")
    assert not spec.matches("debug")


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_event_type_is_a_filter(kind: str) -> None:
    assert parse_spec(f"{kind}=true").matches(kind, "x")


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("member-fail=./h.sh", "unknown event type 'member-fail'"),
        ("X=1 ./h.sh", "write '*=X=1 ./h.sh'"),
        ("user:=./h.sh", "empty user event name"),
        ("member-join,=./h.sh", "empty event type"),
        ("=./h.sh", "empty event type"),
        ("member-failed=", "empty command"),
        ("member-failed=   ", "empty command"),
        ("", "empty command"),
    ],
)
def test_bad_specs(text: str, mentions: str) -> None:
    with pytest.raises(HandlerSpecError, match=re.escape(mentions)):
        parse_spec(text)


def test_cli_rejects_an_unknown_type_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--event-handler", "member-fialed=./h.sh"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("chatterd: error: argument --event-handler:"), err
    assert "member-fialed" in err


def test_cli_options() -> None:
    args = build_parser().parse_args(
        ["--event-handler", "user:deploy=./d.sh", "--event-handler", "./all.sh", "--handler-queue", "5"]
    )
    assert [h.command for h in args.handlers] == ["./d.sh", "./all.sh"]
    assert args.handler_queue == 5
    assert args.handler_timeout == 30.0
    assert build_parser().parse_args([]).handlers == []


# ---------------------------------------------------------------------------- the queue


async def test_overflow_drops_counts_and_logs() -> None:
    h = Handlers([parse_spec("user=true")], name="n1", queue_size=2)
    with structlog.testing.capture_logs() as logs:
        for seq in range(1, 6):
            h.submit(row(seq))  # synchronous: nobody is consuming the queue
    assert h.queued == 2
    assert h.stats["handler_dropped"] == 3
    full = [e for e in logs if e["event"] == "handler_queue_full"]
    assert full, logs
    assert full[0]["id"] == "id3" and full[0]["queue_size"] == 2
    assert len(full) < 3, "drops are logged at most once per second"


async def test_events_no_handler_wants_take_no_room() -> None:
    h = Handlers([parse_spec("member-failed=true")], name="n1", queue_size=1)
    for seq in range(1, 10):
        h.submit(row(seq, "user"))
        h.submit(row(100 + seq, "member-join"))
    assert h.queued == 0 and h.stats["handler_dropped"] == 0
    h.submit(row(200, "member-failed"))
    assert h.queued == 1


async def test_no_handlers_no_work() -> None:
    h = Handlers([], name="n1", queue_size=1)
    for seq in range(1, 5):
        h.submit(row(seq))
    assert h.stats["handler_dropped"] == 0
    with trio.move_on_after(0.2):  # it waits for a SIGHUP to bring handlers (chatterd.reload), idle
        await h.run("127.0.0.1:9")
    assert h.stats == {"handler_runs": 0, "handler_failures": 0, "handler_timeouts": 0, "handler_dropped": 0}


def test_submit_never_raises() -> None:
    h = Handlers([parse_spec("true")], name="n1", queue_size=1)
    h.submit({"kind": "user"})  # malformed: logged, not raised into the protocol loop


# ---------------------------------------------------------------------------- runs


def recorder(out: Path) -> str:
    """A command appending one JSON line per run: stdin's event and the CHATTER_* variables."""
    return (
        f"{shlex.quote(sys.executable)} -c 'import json,os,sys; "
        'print(json.dumps({"row": json.loads(sys.stdin.read()), '
        '"env": {k: v for k, v in os.environ.items() if k.startswith("CHATTER_")}}))\''
        f" >> {shlex.quote(str(out))}"
    )


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


@pytest.mark.e2e
async def test_runs_in_order_once_with_stdin_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATTER_MEMBER_NAME", "stale")  # inherited values never leak into a handler
    out = tmp_path / "out.jsonl"
    # Several filters of one handler match the same event: it still runs once.
    h = Handlers([parse_spec(f"user,user:deploy,member-failed={recorder(out)}")], name="me", timeout=WAIT)
    events = [row(1), row(2, "member-failed", origin="n7"), row(3, "debug", {"DebugMessage": {"text": "x"}}), row(4)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.run, "127.0.0.1:8080")
        for ev in events:
            h.submit(ev)
        await until(lambda: h.stats["handler_runs"] == 3 and h.queued == 0, "three runs")
        await until(lambda: len(records(out)) == 3, "three records")
        nursery.cancel_scope.cancel()
    got = records(out)
    assert [r["row"] for r in got] == [events[0], events[1], events[3]]
    base = {"CHATTER_SELF_NAME": "me", "CHATTER_SELF_ADDR": "127.0.0.1:8080"}
    assert got[0]["env"] == base | {"CHATTER_EVENT": "user", "CHATTER_USER_EVENT": "deploy"}
    assert got[1]["env"] == base | {
        "CHATTER_EVENT": "member-failed",
        "CHATTER_MEMBER_NAME": "n7",
        "CHATTER_MEMBER_ADDR": "127.0.0.1:9",
    }
    assert h.stats == {"handler_runs": 3, "handler_failures": 0, "handler_timeouts": 0, "handler_dropped": 0}


@pytest.mark.e2e
async def test_handlers_run_one_at_a_time(tmp_path: Path) -> None:
    out = tmp_path / "order"
    # The first handler is slow: if runs overlapped, the second would write first.
    specs = [parse_spec(f"sleep 0.3; echo slow$CHATTER_USER_EVENT >> {out}"), parse_spec(f"echo fast >> {out}")]
    h = Handlers(specs, name="me", timeout=WAIT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.run, "a:1")
        h.submit(row(1, payload={"a": 1}))
        h.submit(row(2, payload={"b": 1}))
        await until(lambda: h.stats["handler_runs"] == 4 and h.queued == 0, "four runs")
        await until(lambda: out.exists() and len(out.read_text().split()) == 4, "four lines")
        nursery.cancel_scope.cancel()
    assert out.read_text().split() == ["slowa", "fast", "slowb", "fast"]


@pytest.mark.e2e
async def test_failure_is_counted_and_logged_with_stderr() -> None:
    h = Handlers([parse_spec("echo out; echo first >&2; echo second >&2; exit 3")], name="me", timeout=WAIT)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.run, "a:1")
            h.submit(row(1))
            await until(lambda: h.stats["handler_failures"] == 1, "the failure")
            nursery.cancel_scope.cancel()
    failed = [e for e in logs if e["event"] == "handler_failed"]
    assert len(failed) == 1, logs
    assert failed[0]["status"] == 3
    assert failed[0]["stderr"] == ["first", "second"]
    assert failed[0]["stdout"] == ["out"]
    assert failed[0]["runtime_s"] >= 0
    assert h.stats["handler_timeouts"] == 0


@pytest.mark.e2e
async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The shell stays (two commands) and runs sleep as its child: both must die.
    h = Handlers([parse_spec(f"sleep 600 & echo $! > {pids}; wait")], name="me", timeout=0.5)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.run, "a:1")
            h.submit(row(1))
            h.submit(row(2))
            await until(lambda: h.stats["handler_timeouts"] == 2, "two timeouts")
            nursery.cancel_scope.cancel()
    assert h.stats["handler_failures"] == 2 and h.stats["handler_runs"] == 2
    failed = [e for e in logs if e["event"] == "handler_failed"]
    assert [e.get("timed_out") for e in failed] == [True, True], failed
    assert failed[0]["signal"] == "SIGKILL"
    sleeper = int(pids.read_text())
    await until(lambda: not _alive(sleeper), f"the handler's child {sleeper} to die")


@pytest.mark.e2e
async def test_cancelling_the_task_kills_a_running_handler(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    h = Handlers([parse_spec(f"echo $$ > {pids}; sleep 600; true")], name="me", timeout=WAIT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.run, "a:1")
        h.submit(row(1))
        await until(lambda: pids.exists() and pids.read_text().strip() != "", "the handler to start")
        nursery.cancel_scope.cancel()
    assert not _alive(int(pids.read_text()))


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for an init that does not reap counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# ---------------------------------------------------------------------------- examples/handlers

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "handlers"


def run_example(argv: list[str], env: dict[str, str], event: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        input=json.dumps(event) + "\n",
        env={"PATH": os.environ["PATH"], "CHATTER_SELF_NAME": "n1", "CHATTER_SELF_ADDR": "127.0.0.1:1", **env},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


FAILED_ENV = {"CHATTER_EVENT": "member-failed", "CHATTER_MEMBER_NAME": "db-1", "CHATTER_MEMBER_ADDR": "10.0.0.7:2428"}


@pytest.mark.e2e
def test_example_log_failures(tmp_path: Path) -> None:
    out = tmp_path / "failures.log"
    for env in (FAILED_ENV, FAILED_ENV | {"CHATTER_EVENT": "member-join"}):
        res = run_example([str(EXAMPLES / "log-failures.sh"), str(out)], env, row(1, "member-failed", origin="db-1"))
        assert res.returncode == 0, res
    (line,) = out.read_text().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ db-1 10\.0\.0\.7:2428 failed \(seen by n1\)", line), line


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("flt", "runs"),
    [("role=db", True), ("role=web", False), ("dc=east", False), ("db-*", True), ("web-*", False), ("db-1", True)],
)
def test_example_on_member_failed(tmp_path: Path, flt: str, runs: bool) -> None:
    out = tmp_path / "ran"
    script = [sys.executable, str(EXAMPLES / "on-member-failed.py")]
    cmd = ["sh", "-c", f'cat > {shlex.quote(str(out))}; echo "$CHATTER_MEMBER_NAME" >> {shlex.quote(str(out))}']
    event = row(1, "member-failed", origin="db-1")
    event["payload"]["tags"] = {"role": "db"}
    res = run_example([*script, flt, *cmd], FAILED_ENV, event)
    assert res.returncode == 0, res
    if runs:
        stdin, name = out.read_text().splitlines()
        assert json.loads(stdin) == event and name == "db-1"  # the event and the env reach the command
    else:
        assert not out.exists()
    other_event = run_example([*script, flt, *cmd], FAILED_ENV | {"CHATTER_EVENT": "member-join"}, event)
    assert other_event.returncode == 0 and (runs or not out.exists())
    assert run_example(script, FAILED_ENV, event).returncode == 2


@pytest.mark.e2e
def test_example_print_user_event(tmp_path: Path) -> None:
    script = [sys.executable, str(EXAMPLES / "print-user-event.py"), "deploy"]
    event = row(1, payload={"deploy": {"version": "1.2.3"}}, origin="n2")
    env = {"CHATTER_EVENT": "user", "CHATTER_USER_EVENT": "deploy"}
    res = run_example(script, env, event)
    assert res.returncode == 0, res
    assert res.stdout.endswith(' deploy from n2 on n1: {"version": "1.2.3"}\n'), res
    other = run_example(script, env | {"CHATTER_USER_EVENT": "other"}, row(2, payload={"other": {}}))
    assert (other.returncode, other.stdout) == (0, "")
    out = tmp_path / "deploys.log"
    assert run_example([*script, "--out", str(out)], env, event).returncode == 0
    assert out.read_text().endswith('{"version": "1.2.3"}\n')
