import pytest

from chatterd.core import wire
from chatterd.core.roles import Claim


def rumor(**kw: object) -> wire.Rumor:
    fields: dict = {
        "id": "m1",
        "origin": "n1",
        "ts": 1,
        "lt": 1,
        "hops": 3,
        "payload": {"DebugMessage": {"text": "hi"}},
    }
    fields.update(kw)
    return wire.Rumor(**fields)


def test_round_trip_every_message_type() -> None:
    msgs: list[wire.Message] = [
        wire.Heartbeat(inc=1),
        wire.Alive(node="a", id="x", addr="127.0.0.1:1", inc=2),
        wire.Suspect(node="a", inc=2, by="b"),
        wire.Dead(node="a", inc=2, by="b"),
        wire.Left(node="a", inc=2),
        rumor(),
        wire.Join(node="a", id="x", addr="127.0.0.1:1", inc=2),
        wire.State(members=[wire.MemberRecord(node="a", id="x", addr="h:1", inc=1, state="alive")], reply=True),
        wire.Inject(rid="r", payload={"x": 1}),
        wire.InjectAck(rid="r", id="m", node="a"),
        wire.InjectNack(rid="r", error="bad"),
    ]
    data = wire.encode(msgs, sender="n1")
    back = wire.decode(data)
    assert back.sender == "n1"
    assert back.m == msgs


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00", "malformed"),
        (b'{"v":1,"from":"\xff","m":[{"type":"hb","inc":1}]}', "malformed"),  # invalid UTF-8
        (b'{"v":1,"m":[{"type":"hb","inc":1}]', "malformed"),  # truncated
        (b'{"v":2,"m":[{"type":"hb","inc":1}]}', "version"),
        (b'{"v":1,"m":[]}', "invalid"),
        (b'{"v":1,"m":[{"type":"hb","inc":"1"}]}', "invalid"),
        (b'{"v":1,"m":[{"type":"hb","inc":-1}]}', "invalid"),
        (b'{"v":1,"m":[{"type":"nope"}]}', "invalid"),
        (b'{"v":1,"m":[{"type":"hb","inc":1,"extra":1}]}', "invalid"),
        (b'{"v":1,"m":[{"type":"hb","inc":1}],"bogus":1}', "invalid"),
        (b"[" * 20_000 + b"]" * 20_000, "invalid"),
        (b'{"v":1,"m":[{"type":"rumor","id":"a","origin":"o","ts":1,"lt":1,"hops":-1,"payload":{}}]}', "invalid"),
    ],
    ids=lambda v: v[:30].decode(errors="replace") if isinstance(v, bytes) else v,
)
def test_bad_datagrams_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError) as e:
        wire.decode(data)
    assert e.value.reason == reason


def test_deep_payload_is_rejected() -> None:
    deep: dict = {}
    cur = deep
    for _ in range(40):
        cur["a"] = {}
        cur = cur["a"]
    data = wire.encode([rumor(payload=deep)])
    with pytest.raises(wire.WireError) as e:
        wire.decode(data, max_depth=32)
    assert e.value.reason == "too_deep"
    hostile = b'{"v":1,"m":[{"type":"inject","rid":"r","payload":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    with pytest.raises(wire.WireError):
        wire.decode(hostile, max_size=1_000_000)


def test_oversize_is_rejected_before_parsing() -> None:
    with pytest.raises(wire.WireError) as e:
        wire.decode(b" " * 2000, max_size=1400)
    assert e.value.reason == "oversize"


def test_pack_respects_the_size_limit_and_keeps_every_message() -> None:
    encoded = [wire.encode_message(rumor(id=f"m{i}", payload={"x": "y" * (i * 7)})) for i in range(60)]
    datagrams = wire.pack(encoded, "sender", 1400)
    assert len(datagrams) > 1
    ids = []
    for d in datagrams:
        assert len(d) <= 1400
        ids += [m.id for m in wire.decode(d).m]  # type: ignore[union-attr]
    assert ids == [f"m{i}" for i in range(60)]


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9", ("127.0.0.1", 9)),
        ("7", ("127.0.0.1", 7)),
        ("[::1]:5", ("::1", 5)),
        ("[::]:2428", ("::", 2428)),
        ("[2001:2::7]:2428", ("2001:2::7", 2428)),
        ("node-1.example:2428", ("node-1.example", 2428)),
    ],
)
def test_parse_addr(text: str, addr: tuple[str, int]) -> None:
    assert wire.parse_addr(text) == addr
    if text[0] not in ":7":
        assert wire.format_addr(addr) == text  # and back


@pytest.mark.parametrize("text", ["host:port", "1.2.3.4:99999", "a b:1", "x:-1", "::1:5", "[::1]", "[]:5", "[::1]5"])
def test_parse_addr_errors(text: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        wire.parse_addr(text)


@pytest.mark.parametrize(
    ("role", "holder", "epoch"),
    [("", "n1", 1), ("db", "", 1), ("db", "n1", 0), ("db", "n1", -5)],
)
def test_a_bad_role_claim_is_refused_alone_and_inside_state(role: str, holder: str, epoch: int) -> None:
    """The State branch validates the claims it carries exactly like a standalone RoleClaim."""
    alone = wire.RoleClaim(role=role, holder=holder, epoch=epoch, ts=1)
    inside = wire.State(roles=[Claim(role=role, holder=holder, epoch=epoch, ts=1)])
    for msg in (alone, inside):
        with pytest.raises(wire.WireError) as e:
            wire.decode(wire.encode([msg], "n2"))
        assert e.value.reason == "invalid"
        assert "role claim" in e.value.detail or "epoch" in e.value.detail
    good = wire.State(roles=[Claim(role="db", holder="n1", epoch=1, ts=1)])
    assert wire.decode(wire.encode([good], "n2")).m == [good]
