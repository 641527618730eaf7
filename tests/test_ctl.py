"""The operator commands' formatting, parsing and dispatch, without a node (see
tests/e2e/test_operate.py for the commands against real daemons)."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from chatterd import cli, ctl
from chatterd.api import member_filter
from chatterd.httpauth import HttpToken
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
    assert err.startswith(f"chatterd: error: no chatter node at http://127.0.0.1:{port} (connection refused): ")
    assert err.count("\n") == 1 and "the address in $CHATTER_HTTP_ADDR" in err and "--http ADDR" in err
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


# ---------------------------------------------------------------------- the HTTP client, on a mock network


def refused(request: httpx.Request) -> NoReturn:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as e:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request) from e


RealClient = ctl.Client  # the tests that run cli.main() replace ctl.Client with a mock_client


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> ctl.Client:
    client = RealClient(("127.0.0.1", 2428), transport=httpx.MockTransport(handler))
    client.sleep = lambda s: None
    return client


def event_row(seq: int, kind: str = "member-join", origin: str = "n1") -> dict[str, Any]:
    payload = {"name": origin, "addr": "10.0.0.1:2428", "incarnation": 1, "state": "alive", "tags": {}}
    return {
        "seq": seq,
        "id": f"{kind}:{origin}:1",
        "kind": kind,
        "origin": origin,
        "payload": payload,
        "received_at": 0,
    }


def sse(*rows: dict[str, Any], comments: int = 0) -> bytes:
    out = b"retry: 1000\n\n" + b": keep-alive\n\n" * comments
    for r in rows:
        out += f"id: {r['seq']}\ndata: {json.dumps(r)}\n\n".encode()
    return out


def test_sse_parser() -> None:
    text = 'retry: 500\n\n: a comment\nid: 1\ndata: {"a":\ndata: 1}\n\nid: 2\ndata:x\n\nevent: other\n\n'
    events = list(ctl.sse_events(text.split("\n")))
    assert events == [
        ctl.SSEvent(None, None, 500),
        ctl.SSEvent('{"a":\n1}', "1"),
        ctl.SSEvent("x", "2"),
    ]


def test_follow_reconnects_from_the_last_event_until_the_node_is_gone() -> None:
    asked: list[str | None] = []

    def node(request: httpx.Request) -> httpx.Response:
        assert request.url.path == ctl.STREAM_PATH and request.headers["accept"] == "text/event-stream"
        asked.append(request.url.params.get("since"))
        if len(asked) == 1:  # the backlog after 3, then the node ends the stream
            return httpx.Response(200, content=sse(event_row(4), event_row(5), comments=1))
        if len(asked) == 2:  # a stream that breaks halfway

            def body() -> Iterator[bytes]:
                yield sse(event_row(6))
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

            return httpx.Response(200, content=body())
        return refused(request)

    client = mock_client(node)
    seen = []
    with pytest.raises(ctl.NodeUnreachable) as e:
        for row in client.stream_events(since=3):
            seen.append(row["seq"])
    assert seen == [4, 5, 6]
    assert asked == ["3", "5", "6"]
    assert str(e.value) == "no chatter node at http://127.0.0.1:2428 (connection refused)"
    assert e.value.status == 1


def test_follow_gives_up_on_a_node_that_never_answers() -> None:
    calls = []

    def mute(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    client = mock_client(mute)
    with pytest.raises(ctl.CtlError) as e:
        list(client.stream_events())
    assert not isinstance(e.value, ctl.NodeUnreachable)
    assert str(e.value) == "no answer from the chatter node at http://127.0.0.1:2428 (timed out)"
    assert len(calls) == ctl.RECONNECT_TRIES


def test_events_follow_prints_the_backlog_then_the_stream(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def node(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            return httpx.Response(200, json=[event_row(1), event_row(2, origin="n2")])
        if request.url.params["since"] == "2":
            return httpx.Response(200, content=sse(event_row(3, "member-failed", "n2")))
        return refused(request)

    monkeypatch.setattr(ctl, "Client", lambda addr, **kw: mock_client(node))
    assert cli.main(["events", "--follow", "--json", "--http", "127.0.0.1:2428"]) == 1
    out, err = capsys.readouterr()
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3]
    assert err == "chatterd: error: no chatter node at http://127.0.0.1:2428 (connection refused)\n"
    assert cli.main(["events", "--follow", "--http", "127.0.0.1:2428"]) == 1
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["SEQ", "TIME", "KIND", "ORIGIN", "DETAIL"]
    assert [line.split()[2] for line in lines] == ["member-join", "member-join", "member-failed"]


@pytest.mark.parametrize(
    ("status", "body", "message", "code"),
    [
        (400, {"error": "tag key too long"}, "tag key too long", 2),
        (409, {"error": "the node is leaving"}, "the node is leaving", 2),
        (404, None, "http://127.0.0.1:2428/v1/tags answered 404 Not Found", 2),
        (500, None, "http://127.0.0.1:2428/v1/tags answered 500 Internal Server Error", 1),
        (503, {"error": "overloaded"}, "overloaded", 1),
    ],
)
def test_error_statuses(status: int, body: Any, message: str, code: int) -> None:
    def node(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status, text="oops")

    with pytest.raises(ctl.CtlError) as e:
        mock_client(node).request("PUT", "/v1/tags", {"set": {"a": "b"}})
    assert (str(e.value), e.value.status) == (message, code)


def test_not_json_and_timeouts() -> None:
    with pytest.raises(ctl.CtlError, match=r"did not answer like a chatter node \(not JSON\)"):
        mock_client(lambda r: httpx.Response(200, text="<html>")).get("/v1/members")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ctl.CtlError, match=r"^no answer from the chatter node at http://127.0.0.1:2428 \(timed out\)$"):
        mock_client(slow).get("/v1/members")

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(ctl.CtlError, match=r"^no chatter node at http://127.0.0.1:2428 \(timed out\)$"):
        mock_client(unreachable).get("/v1/members")


def test_tags_show_on_a_degraded_node(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    health = {"status": "degraded", "reasons": ["isolated"], "name": "n1", "tags": {"a": "1"}, "incarnation": 3}
    monkeypatch.setattr(ctl, "Client", lambda addr, **kw: mock_client(lambda r: httpx.Response(503, json=health)))
    assert cli.main(["tags", "--http", "127.0.0.1:2428"]) == 0
    assert capsys.readouterr().out.splitlines() == ["KEY  VALUE", "a    1"]


def test_members_filters_go_in_the_query(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def node(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params.multi_items())
        return httpx.Response(200, json=ROWS[:1])

    monkeypatch.setattr(ctl, "Client", lambda addr, **kw: mock_client(node))
    assert cli.main(["members", "--status", "alive", "--tag", "role=db", "--tag", "x=a b"]) == 0
    assert seen == [[("status", "alive"), ("tag", "role=db"), ("tag", "x=a b")]]
    assert capsys.readouterr().out.startswith("NAME")


def test_the_token_is_found_and_sent(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("CHATTER_HTTP_TOKEN", raising=False)
    HttpToken("auto-token", tmp_path / "chatter" / "http-token-127.0.0.1-2428").publish()
    seen: list[str | None] = []

    def node(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != "Bearer auto-token":
            return httpx.Response(401, json={"error": "needs the token"})
        return httpx.Response(200, json={"name": "n1", "tags": {"a": "1"}, "incarnation": 4, "changed": True})

    def client(addr: Any, token: str | None = None) -> ctl.Client:
        return RealClient(addr, transport=httpx.MockTransport(node), token=token)

    monkeypatch.setattr(ctl, "Client", client)
    assert cli.main(["tags", "set", "a=1", "--http", "127.0.0.1:2428"]) == 0
    assert seen == ["Bearer auto-token"]
    assert "tags updated" in capsys.readouterr().out

    monkeypatch.setenv("CHATTER_HTTP_TOKEN", "wrong")
    assert cli.main(["tags", "set", "a=1", "--http", "127.0.0.1:2428"]) == 2
    err = capsys.readouterr().err
    assert "needs its API token (the token given was refused)" in err and err.count("\n") == 1
    monkeypatch.delenv("CHATTER_HTTP_TOKEN")
    assert cli.main(["leave", "--http", "127.0.0.1:2429"]) == 2  # no file for that node
    assert "no token found for this node" in capsys.readouterr().err
    assert cli.main(["leave", "--token-file", str(tmp_path / "missing")]) == 2
    assert "cannot read the token file" in capsys.readouterr().err
