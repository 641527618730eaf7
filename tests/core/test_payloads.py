import pytest

from chatterd.core.payloads import PayloadError, kind_of, user_event_name, validate

UUID = "541b10e7-d13a-45e8-8567-7d450ce86603"

VALID = [
    {"DebugMessage": {"text": "hello world"}},
    {"DeviceGossip": {"DeviceAdded": {"origin": UUID, "name": "gateway", "description": "ASUS Router model RT-N55U "}}},
    {"DeviceGossip": {"DeviceRemoved": {"origin": UUID, "name": "gateway"}}},
    {"DeviceGossip": {"DeviceStatus": {"origin": UUID, "name": "gateway", "metrics": {"load": {"Text": "0.3"}}}}},
    {"ViewGossip": {"ServerAdded": {"uuid": UUID, "addr": "127.0.0.1:8080"}}},
    {"ViewGossip": {"ServerRemoved": {"uuid": UUID}}},
    {"deploy": {"version": "1.2.3"}},
    {"a": 1, "b": [1, 2]},
]


@pytest.mark.parametrize("payload", VALID)
def test_valid_payloads(payload: dict) -> None:
    assert validate(payload) is payload


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([1, 2], "must be a JSON object"),
        ("text", "must be a JSON object"),
        ({}, "empty"),
        ({"DebugMessage": {}}, "missing field 'text'"),
        ({"DebugMessage": {"text": 5}}, "text must be a string, got a number"),
        ({"DebugMessage": {"text": "x", "more": 1}}, "unknown field"),
        ({"DebugMessage": {"text": "x"}, "other": 1}, "only key"),
        ({"DeviceGossip": {"DeviceAdded": {"origin": UUID, "name": "g"}}}, "missing field 'description'"),
        ({"DeviceGossip": {"DeviceAdded": {"origin": "nope", "name": "g", "description": ""}}}, "must be a UUID"),
        ({"DeviceGossip": {"DeviceExploded": {}}}, "unknown variant"),
        ({"DeviceGossip": {"DeviceStatus": {"origin": UUID, "name": "g", "metrics": {"load": 3}}}}, "one-key object"),
        ({"ViewGossip": {"ServerAdded": {"uuid": UUID, "addr": "nowhere"}}}, "addr"),
    ],
)
def test_invalid_payloads_say_why(payload: object, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        validate(payload)


def test_kinds_and_names() -> None:
    assert [kind_of(p) for p in VALID] == ["debug", "device", "device", "device", "view", "view", "user", "user"]
    assert user_event_name({"deploy": {}}) == "deploy"
    assert user_event_name({"a": 1, "b": 2}) == "user"
