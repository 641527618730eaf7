"""parse_lock_url: ``--lock etcd://HOST[:PORT]/PREFIX`` (no etcd needed)."""

from __future__ import annotations

import pytest

from chatterd.lock import LockSpec, LockUrlError, parse_lock_url


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("etcd://127.0.0.1:2379/chatter/", LockSpec("127.0.0.1", 2379, "chatter/")),
        ("etcd://127.0.0.1:2379/chatter", LockSpec("127.0.0.1", 2379, "chatter/")),
        ("etcd://etcd.example:12379/a/b/", LockSpec("etcd.example", 12379, "a/b/")),
        ("etcd://localhost/chatter/", LockSpec("localhost", 2379, "chatter/")),
        ("etcd://[::1]:2379/x/", LockSpec("::1", 2379, "x/")),
        ("  etcd://10.0.0.1:2379/chatter/  ", LockSpec("10.0.0.1", 2379, "chatter/")),
    ],
)
def test_parse_lock_url_accepts(text: str, spec: LockSpec) -> None:
    assert parse_lock_url(text) == spec


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "scheme"),
        ("127.0.0.1:2379/chatter/", "scheme"),
        ("http://127.0.0.1:2379/chatter/", "scheme"),
        ("etcd:///chatter/", "no host"),
        ("etcd://127.0.0.1:2379", "no key prefix"),
        ("etcd://127.0.0.1:2379/", "no key prefix"),
        ("etcd://127.0.0.1:port/chatter/", "invalid lock URL"),
        ("etcd://127.0.0.1:70000/chatter/", "invalid lock URL"),
        ("etcd://127.0.0.1:0/chatter/", "port must be"),
        ("etcd://user:pw@127.0.0.1:2379/chatter/", "credentials"),
        ("etcd://127.0.0.1:2379/chatter/?x=1", "query"),
        ("etcd://127.0.0.1:2379/chat ter/", "whitespace"),
    ],
)
def test_parse_lock_url_rejects_with_one_clear_line(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:  # a LockUrlError, which is a ValueError (the CLI catches those)
        parse_lock_url(text)
    assert isinstance(info.value, LockUrlError)
    message = str(info.value)
    assert why in message
    assert "\n" not in message
    assert "etcd://HOST[:PORT]/PREFIX" in message


def test_the_spec_gives_the_base_url_and_the_keys() -> None:
    assert LockSpec("::1", 2379, "x/").base_url == "http://[::1]:2379"
    assert LockSpec("127.0.0.1", 12379, "chatter/").base_url == "http://127.0.0.1:12379"
    assert LockSpec("127.0.0.1", 2379, "chatter/").key("primary") == "chatter/primary"
