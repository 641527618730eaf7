"""The operator commands' formatting, parsing and dispatch, without a node (see
tests/e2e/test_operate.py for the commands against real daemons)."""

import pytest

from chatterd import cli, ctl
from chatterd.api import member_filter
from chatterd.testing import free_port

ROWS = [
    {
        "name": "db-1",
        "addr": "10.0.0.1:2428",
        "state": "alive",
        "incarnation": 1754000000000,
        "last_heard_s": 0.0,
        "tags": {"role": "db", "dc": "east"},
    },
    {
        "name": "web-long-name",
        "addr": "10.0.0.22:2428",
        "state": "dead",
        "incarnation": 7,
        "last_heard_s": None,
        "tags": {},
    },
]


def test_members_table_is_aligned() -> None:
    lines = ctl.members_table(ROWS).splitlines()
    assert lines == [
        "NAME           ADDR            STATE  INCARNATION    LAST HEARD  TAGS",
        "db-1           10.0.0.1:2428   alive  1754000000000  0.0s        dc=east,role=db",
        "web-long-name  10.0.0.22:2428  dead   7              -",
    ]


def test_event_lines() -> None:
    printer = ctl.EventPrinter()
    rows = [
        {
            "seq": 3,
            "kind": "member-failed",
            "origin": "web-long-name",
            "received_at": 0.0,
            "payload": {"addr": "10.0.0.22:2428", "incarnation": 7, "by": "db-1", "after_s": 2.5, "tags": {}},
        },
        {"seq": 14, "kind": "user", "origin": "db-1", "received_at": 0.0, "payload": {"deploy": {"v": 1}}},
    ]
    first, second = printer.lines(rows)
    assert first.endswith("member-failed   web-long-name  addr=10.0.0.22:2428 inc=7 by=db-1 after=2.5s")
    assert second.endswith('user            db-1           {"deploy":{"v":1}}')
    assert first.index("web-long-name") == second.index("db-1") == printer.header().index("ORIGIN")
    assert first.startswith("    3  ") and second.startswith("   14  ")


@pytest.mark.parametrize(
    ("statuses", "tag_pairs", "names"),
    [
        ([], [], {"db-1", "web-long-name"}),
        (["alive"], [], {"db-1"}),
        (["alive,dead"], [], {"db-1", "web-long-name"}),
        (["alive", "dead"], [], {"db-1", "web-long-name"}),
        ([], ["role=db"], {"db-1"}),
        ([], ["role=db", "dc=west"], set()),
        (["dead"], ["role=db"], set()),
        ([], ["role="], set()),
    ],
)
def test_member_filter(statuses: list[str], tag_pairs: list[str], names: set[str]) -> None:
    keep = member_filter(statuses, tag_pairs)
    assert {r["name"] for r in ROWS if keep(r)} == names


@pytest.mark.parametrize(("statuses", "tag_pairs"), [(["up"], []), ([], ["role"]), ([], ["=db"])])
def test_member_filter_rejects_bad_filters(statuses: list[str], tag_pairs: list[str]) -> None:
    with pytest.raises(ValueError):
        member_filter(statuses, tag_pairs)


def test_no_node_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv(ctl.ENV_HTTP, f"127.0.0.1:{port}")
    assert cli.main(["members"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"chatterd: error: no chatter node at http://127.0.0.1:{port} (connection refused)\n"
    # --http wins over the environment, also when given before a tags action.
    other = free_port()
    assert cli.main(["tags", "--http", f"http://127.0.0.1:{other}/", "set", "a=1"]) == 1
    assert f"127.0.0.1:{other} (connection refused)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["tags", "set", "novalue"], "expected KEY=VALUE"),
        (["tags", "set", "k=" + "v" * 600], "over the 512-byte limit"),
        (["tags", "delete", "a=b"], "give the key alone"),
        (["members", "--http", "nowhere"], "invalid address"),
        (["members", "--status"], "expected one argument"),
        (["tags", "rename"], "invalid choice"),
        (["events", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv: list[str], mentions: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing listens at the address: every case here fails before any request.
    argv = [*argv, "--http", f"127.0.0.1:{free_port()}"] if "--http" not in argv else argv
    with pytest.raises(SystemExit) as e:
        code = cli.main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("chatterd"), err
    assert mentions in err, err


def test_bad_env_address(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ctl.ENV_HTTP, "not an address")
    assert cli.main(["devices"]) == 2
    assert capsys.readouterr().err.startswith("chatterd: error: CHATTER_HTTP_ADDR: invalid address")
