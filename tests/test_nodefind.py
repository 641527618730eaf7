"""How the operator commands find the node: --http before or after the command, then
$CHATTER_HTTP_ADDR, then the runtime file of a node of this user, then 127.0.0.1:2428; the
runtime file itself (written, read, stale, hostile); the error that names what was tried."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatterd import nodefind, runfile
from chatterd.cliargs import COMMANDS


@pytest.fixture
def rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("CHATTER_HTTP_ADDR", raising=False)
    return tmp_path / "chatter"


def test_hoist_moves_global_options_after_the_command() -> None:
    assert nodefind.hoist(["--http", "1.2.3.4:5", "members", "--json"], COMMANDS) == [
        "members",
        "--http",
        "1.2.3.4:5",
        "--json",
    ]
    assert nodefind.hoist(["--http=h:1", "--token-file", "t", "tags", "set", "a=b"], COMMANDS) == [
        "tags",
        "--http=h:1",
        "--token-file",
        "t",
        "set",
        "a=b",
    ]
    assert nodefind.hoist(["members"], COMMANDS) == ["members"]


def test_hoist_leaves_the_daemon_command_line_alone() -> None:
    assert nodefind.hoist(["--http", "127.0.0.1:8080", "--listen", "127.0.0.1:8080"], COMMANDS) is None
    assert nodefind.hoist(["--data-dir", "/x"], COMMANDS) is None
    assert nodefind.hoist(["--http"], COMMANDS) is None
    assert nodefind.hoist([], COMMANDS) is None


def test_order_given_then_env_then_runtime_file_then_default(rundir: Path) -> None:
    node = runfile.RunFile(("127.0.0.1", 9001), "n1", os.getpid(), rundir / "x")
    assert nodefind.find(("10.0.0.1", 1), {"CHATTER_HTTP_ADDR": "10.0.0.2:2"}, [node]).addr == ("10.0.0.1", 1)
    env = nodefind.find(None, {"CHATTER_HTTP_ADDR": "http://10.0.0.2:2/"}, [node])
    assert env.addr == ("10.0.0.2", 2) and "CHATTER_HTTP_ADDR" in env.source
    local = nodefind.find(None, {}, [node])
    assert local.addr == ("127.0.0.1", 9001) and "'n1'" in local.source and local.note is None
    default = nodefind.find(None, {}, [])
    assert default.addr == ("127.0.0.1", 2428)
    line = default.unreachable("no chatter node at http://127.0.0.1:2428 (connection refused)")
    for words in ("--http (not given)", "$CHATTER_HTTP_ADDR (not set)", "no runtime file in", "--http ADDR or"):
        assert words in line, line
    assert "\n" not in line


def test_bad_env_address_is_one_line(rundir: Path) -> None:
    with pytest.raises(nodefind.FindError, match="CHATTER_HTTP_ADDR"):
        nodefind.find(None, {"CHATTER_HTTP_ADDR": "nope:port"}, [])


def test_several_nodes_lowest_address_wins_and_is_named(rundir: Path) -> None:
    a = runfile.publish("b-node", ("127.0.0.1", 9200))
    runfile.publish("a-node", ("0.0.0.0", 9100))  # reached at loopback
    nodes = runfile.running()
    assert [(n.name, n.http) for n in nodes] == [("a-node", ("127.0.0.1", 9100)), ("b-node", ("127.0.0.1", 9200))]
    found = nodefind.find(None, {}, nodes)
    assert found.addr == ("127.0.0.1", 9100)
    assert found.note is not None and "2 nodes" in found.note and "a-node at 127.0.0.1:9100" in found.note
    assert oct(a.stat().st_mode & 0o777) == "0o600" and oct(a.parent.stat().st_mode & 0o777) == "0o700"


def test_stale_and_hostile_runtime_files_are_skipped(rundir: Path) -> None:
    gone = next(p for p in range(2**22 - 1, 2**22 - 1000, -1) if not runfile.pid_runs(p))  # bounded search
    runfile.publish("gone", ("127.0.0.1", 9300), pid=gone)  # a node killed by SIGKILL left it
    (rundir / "node-junk-1.json").write_text("{not json")
    (rundir / "node-big-1.json").write_bytes(b" " * (runfile.MAX_FILE + 1))
    (rundir / "node-shape-1.json").write_text('{"name": 1, "http": "127.0.0.1:1", "pid": 1}')
    (rundir / "node-fifo-1.json").unlink(missing_ok=True)
    os.mkfifo(rundir / "node-fifo-1.json")  # must not block the command
    os.symlink("/etc/passwd", rundir / "node-link-1.json")
    assert runfile.running() == []


def test_remove_only_our_own_file(rundir: Path) -> None:
    path = runfile.publish("n1", ("127.0.0.1", 9400))
    runfile.remove(path, pid=os.getpid() + 1)  # another node's now: kept
    assert path.exists()
    runfile.remove(path)
    assert not path.exists()
    runfile.remove(path)  # already gone: fine


@pytest.mark.e2e
def test_unreachable_error_from_the_command(rundir: Path) -> None:
    """No node anywhere: one line naming what was tried and how to point the command."""
    env = dict(os.environ, XDG_RUNTIME_DIR=str(rundir.parent))
    env.pop("CHATTER_HTTP_ADDR", None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    res = subprocess.run(
        [sys.executable, "-m", "chatterd", "--http", "127.0.0.1:9", "members"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "no chatter node at http://127.0.0.1:9" in lines[0] and "given by --http" in lines[0]
    assert "CHATTER_HTTP_ADDR=ADDR" in lines[0]
