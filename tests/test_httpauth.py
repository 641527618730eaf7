"""The API token's file: made by the node (0600, atomic, named after the address), found by the
operator commands the same way, refused when it is not a private regular file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chatterd import httpauth
from chatterd.httpauth import HttpToken, TokenError, find_token, is_loopback


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.delenv(httpauth.ENV_TOKEN, raising=False)
    return xdg / "chatter"


def test_loopback_rule() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.org")


def test_auto_token_in_the_runtime_dir_found_by_address_then_removed(runtime_dir: Path) -> None:
    tok = HttpToken.for_node(("127.0.0.1", 0), None, None)
    assert tok.path is not None and tok.kept is None and tok.loopback and len(tok.token) >= 40
    tok.publish(["http://127.0.0.1:4711"])  # port 0: named after the bound port
    assert tok.path == runtime_dir / "http-token-127.0.0.1-4711"
    assert stat.S_IMODE(tok.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(runtime_dir.stat().st_mode) == 0o700
    assert find_token(("127.0.0.1", 4711)) == tok.token
    assert find_token(("127.0.0.1", 4712)) is None
    other = HttpToken.for_node(("127.0.0.1", 4712), None, None)
    other.publish()
    assert find_token(("127.0.0.1", 4712)) == other.token != tok.token  # two nodes, two files
    assert [p.name for p in runtime_dir.iterdir() if p.name.startswith(".")] == []  # no temp file left
    tok.remove()
    assert not tok.path.exists() and other.path.exists()


def test_a_node_on_every_address_is_found_from_loopback(runtime_dir: Path) -> None:
    tok = HttpToken.for_node(("0.0.0.0", 5000), None, None)
    assert not tok.loopback
    tok.publish()
    assert find_token(("127.0.0.1", 5000)) == tok.token


def test_data_dir_token_and_the_lookup_order(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    tok = HttpToken.for_node(("127.0.0.1", 6000), None, data)
    assert tok.kept == data / "http-token" and stat.S_IMODE(tok.kept.stat().st_mode) == 0o600
    tok.publish()
    assert tok.path == runtime_dir / "http-token-127.0.0.1-6000"
    assert find_token(("127.0.0.1", 6000)) == tok.token  # the commands need no --data-dir
    tok.remove()
    assert find_token(("127.0.0.1", 6000)) is None and tok.kept.exists()  # kept for the next start
    assert find_token(("127.0.0.1", 6000), data_dir=data) == tok.token
    again = HttpToken.for_node(("127.0.0.1", 6001), None, data)
    assert again.token == tok.token  # the same token after a restart
    (data / "http-token").write_text("")  # damaged: a new one
    assert HttpToken.for_node(("127.0.0.1", 6000), None, data).token not in ("", tok.token)

    given = tmp_path / "given"
    given.write_text("from-file\n")
    monkeypatch.setenv(httpauth.ENV_TOKEN, "from-env")
    assert find_token(("127.0.0.1", 6000), data_dir=data) == "from-env"
    assert find_token(("127.0.0.1", 6000), token_file=given) == "from-file"


def test_a_given_token_file_is_read_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  abc-DEF_123 \n")
    tok = HttpToken.for_node(("10.1.2.3", 80), path, None)
    assert tok.token == "abc-DEF_123" and tok.path is None and tok.kept == path and not tok.loopback
    tok.publish()
    tok.remove()
    assert path.read_text() == "  abc-DEF_123 \n"


def test_unusable_token_files_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("tok\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    two = tmp_path / "two"
    two.write_text("a b\n")
    big = tmp_path / "big"
    big.write_text("x" * (httpauth.MAX_TOKEN_FILE + 1))
    for bad in (link, fifo, empty, two, big, tmp_path / "missing", Path("/dev/zero")):
        with pytest.raises(TokenError):
            httpauth.read_token(bad)
    assert isinstance(TokenError("x"), OSError)  # chatterd prints it as one line at start


def test_a_runtime_dir_that_is_not_private_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    (xdg / "chatter").mkdir(mode=0o755)
    os.chmod(xdg / "chatter", 0o755)
    with pytest.raises(TokenError, match="private"):
        HttpToken.for_node(("127.0.0.1", 1), None, None)
    os.rmdir(xdg / "chatter")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (xdg / "chatter").symlink_to(elsewhere)
    with pytest.raises(TokenError, match="private"):
        HttpToken.for_node(("127.0.0.1", 1), None, None)
    assert find_token(("127.0.0.1", 1)) is None  # the commands skip it


def test_the_check_is_a_bearer_token_compare() -> None:
    tok = HttpToken("abc")
    assert tok.check("Bearer abc") and tok.check("bearer  abc ")
    assert not any(tok.check(v) for v in (None, "", "abc", "Bearer", "Bearer abcd", "Bearer ab", "Basic abc"))
