"""The query:NAME handlers (chatterd.queryhandlers) and the POST /v1/query body
(chatterd.queryops): parsing, the handler's outcome as an answer, a handler killed at its
timeout, and the requests refused before anything is asked."""

from __future__ import annotations

import pytest
import trio

from chatterd.core.config import QUERY_RESPONSE_MAX
from chatterd.core.events import QueryRequest
from chatterd.core.query import QueryError
from chatterd.handlers import HandlerSpecError, parse_spec
from chatterd.queryhandlers import Outcome, QueryRunner, answer_of, run_command
from chatterd.queryops import parse_body


def test_query_filters_name_queries_and_match_no_event() -> None:
    spec = parse_spec("query:uptime,query:load=uptime -p")
    assert spec.query_names == {"uptime", "load"} and spec.command == "uptime -p"
    assert spec.filter_text == "query:load,query:uptime"
    assert not any(spec.matches(kind) for kind in ("member-join", "user", "debug"))
    with pytest.raises(HandlerSpecError, match="query:NAME and event types"):
        parse_spec("query:x,member-join=cmd")
    with pytest.raises(HandlerSpecError, match="invalid query name"):
        parse_spec("query:_keys=cmd")
    with pytest.raises(HandlerSpecError, match="invalid query name"):
        parse_spec("query:=cmd")


def test_the_outcome_becomes_the_answer() -> None:
    assert answer_of(Outcome(0, b"up 3 days\n", b""), 5) == ("up 3 days\n", "")
    assert answer_of(Outcome(2, b"half", b"no disk\nmore"), 5) == ("half", "exit status 2: no disk")
    assert answer_of(Outcome(None, b"", b""), 1.5) == ("", "the handler did not finish within 1.5 s")
    data, error = answer_of(Outcome(0, b"x" * (QUERY_RESPONSE_MAX + 1), b""), 5)
    assert data == "" and "over the response limit" in error
    assert answer_of(Outcome(0, b"\xff ok", b""), 5) == ("\ufffd ok", "")


@pytest.mark.e2e
async def test_a_handler_past_its_timeout_is_killed_with_its_children() -> None:
    with trio.fail_after(20):
        started = trio.current_time()
        out = await run_command("sleep 30 & echo started; sleep 30", b"", {"PATH": "/usr/bin:/bin"}, 0.5, 100)
        assert out.status is None and out.stdout == b"started\n"
        assert trio.current_time() - started < 10
        out = await run_command("cat; echo", b"payload", {"PATH": "/usr/bin:/bin"}, 10, 100)
        assert (out.status, out.stdout) == (0, b"payload\n")


@pytest.mark.e2e
async def test_the_runner_answers_each_request_and_busy_when_full() -> None:
    answers: list[tuple[str, str, str]] = []
    spec = parse_spec("query:echo=cat")
    runner = QueryRunner([spec], name="n0", timeout=10, respond=lambda *a: answers.append(a), queue_size=1)
    assert runner.names == {"echo"}
    runner.submit(QueryRequest("q1", "echo", "n1", "one", 10))
    runner.submit(QueryRequest("q2", "echo", "n1", "two", 10))  # the queue holds one: busy at once
    assert answers == [("q2", "", "the query handlers of this node are busy")]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run, "127.0.0.1:1")
            while len(answers) < 2:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert answers[1] == ("q1", "one", "")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "must be an object"),
        ({"payload": "x"}, "must be an object"),
        ({"name": "q", "extra": 1}, "must be an object"),
        ({"name": "q", "payload": 3}, '"payload" must be a string'),
        ({"name": "q", "nodes": "n1"}, '"nodes" must be a list'),
        ({"name": "q", "tags": {"role": 1}}, '"tags" must be an object'),
        ({"name": "q", "ack": "no"}, '"ack" must be true or false'),
        ({"name": "q", "relay": 9}, '"relay" must be an integer from 0 to 5'),
        ({"name": "q", "relay": True}, '"relay" must be an integer'),
        ({"name": "q", "timeout": 0}, "the timeout must be"),
        ({"name": "q", "timeout": "nan"}, "the timeout must be"),
        ({"name": "q", "timeout": 1e9}, "the timeout must be"),
    ],
)
def test_bad_query_bodies_are_refused(body: object, words: str) -> None:
    with pytest.raises(QueryError, match=words):
        parse_body(body)


def test_a_good_body() -> None:
    q = parse_body({"name": "q", "payload": "p", "nodes": ["n1"], "tags": {"r": "^w"}, "ack": False, "relay": 2})
    assert (q.name, q.data, q.nodes, dict(q.tags), q.ack, q.relay, q.timeout) == (
        "q",
        "p",
        ("n1",),
        {"r": "^w"},
        False,
        2,
        None,
    )
