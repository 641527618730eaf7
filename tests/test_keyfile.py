"""The shell's keys: --encrypt, the keyring file (0600, refused when others can read it,
written back when the keyring changes), keygen, and chatterd's one-line errors."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from chatterd import cli, keyfile
from chatterd.core.keyring import KeyringError, encode_key, parse_key

K1 = encode_key(bytes(range(32)))
K2 = encode_key(bytes(range(16)))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keygen_prints_a_new_32_byte_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keygen"]) == 0
    first = capsys.readouterr().out.strip()
    assert len(base64.b64decode(first)) == 32 and parse_key(first)
    cli.main(["keygen"])
    assert capsys.readouterr().out.strip() != first


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["--encrypt", "not base64!"], "base64"),
        (["--encrypt", encode_key(b"x" * 10)], "10 bytes"),
        (["--label", "prod"], "--label needs"),
        (["--encrypt", K1, "--label", "x" * 256], "255"),
        (["--no-encrypt-verify-incoming"], "need --encrypt"),
        (["--no-encrypt-verify-outgoing", "--no-encrypt-verify-incoming"], "need --encrypt"),
        (["--encrypt", K1, "--no-encrypt-verify-outgoing"], "needs --no-encrypt-verify-incoming"),
    ],
)
def test_a_bad_key_or_label_is_one_line_and_exit_2(
    argv: list[str], mentions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--listen", "127.0.0.1:0", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("chatterd: error:") and mentions in err, err


def test_a_missing_keyring_file_is_created_from_the_key_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keyring.json"
    ring = keyfile.from_options(K1, path, "")
    assert ring is not None and ring.keys == [parse_key(K1)]
    assert json.loads(path.read_text()) == [K1] and mode(path) == 0o600
    again = keyfile.from_options(K2, path, "")  # the file wins over --encrypt once it exists
    assert again is not None and again.keys == [parse_key(K1)]


def test_the_file_is_written_back_atomically_when_the_keyring_changes(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    ring = keyfile.from_options(K1, path, "")
    assert ring is not None
    keyfile.Security(ring, path, "")
    ring.install(parse_key(K2))
    assert json.loads(path.read_text()) == [K1, K2]
    ring.use(parse_key(K2))
    ring.remove(parse_key(K1))
    assert json.loads(path.read_text()) == [K2] and mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("content", "file_mode", "mentions"),
    [
        (json.dumps([K1]), 0o644, "readable by other users"),
        (json.dumps([K1]), 0o604, "readable by other users"),
        ("[", 0o600, "JSON"),
        ("[]", 0o600, "non-empty"),
        (json.dumps({"k": K1}), 0o600, "list"),
        (json.dumps(["short"]), 0o600, "invalid key"),
    ],
)
def test_a_bad_keyring_file_is_refused(tmp_path: Path, content: str, file_mode: int, mentions: str) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(content)
    path.chmod(file_mode)
    with pytest.raises(KeyringError, match=mentions):
        keyfile.from_options(None, path, "")


def test_a_keyring_file_that_is_not_a_regular_file_or_is_missing_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyringError, match="not a regular file"):
        keyfile.from_options(None, fifo, "")
    with pytest.raises(KeyringError, match="does not exist"):
        keyfile.from_options(None, tmp_path / "none.json", "")
    big = tmp_path / "big.json"
    big.write_text(json.dumps([K1] * 2000))
    big.chmod(0o600)
    with pytest.raises(KeyringError, match="too big"):
        keyfile.from_options(None, big, "")


def test_the_plaintext_warning_is_for_a_node_without_key_beyond_loopback() -> None:
    plain = keyfile.Security(None, None, "")
    assert plain.check_listen("127.0.0.1") is None and plain.health()["warnings"] == []
    assert plain.check_listen("0.0.0.0") == keyfile.PLAINTEXT_WARNING
    assert plain.health() == {
        "encryption": "off",
        "encryption_mode": "plaintext",
        "warnings": [keyfile.PLAINTEXT_WARNING],
    }
    ring = keyfile.from_options(K1, None, "prod")
    sealed = keyfile.Security(ring, None, "prod")
    assert sealed.check_listen("0.0.0.0") is None
    assert sealed.health() == {
        "encryption": "on",
        "encryption_mode": "sealed",
        "warnings": [],
        "keys": 1,
        "label": "prod",
    }


@pytest.mark.parametrize(
    ("outgoing", "incoming", "mode_name"),
    [(False, False, "send-plaintext"), (True, False, "accept-plaintext"), (True, True, "sealed")],
)
def test_each_phase_of_the_rolling_move_reaches_the_sealer_and_health(
    outgoing: bool, incoming: bool, mode_name: str
) -> None:
    ring = keyfile.from_options(K1, None, "")
    sec = keyfile.Security(ring, None, "", outgoing=outgoing, incoming=incoming)
    sealer = sec.sealer(1000)
    assert sealer is not None and (sealer.outgoing, sealer.incoming) == (outgoing, incoming)
    health = sec.health()
    assert health["encryption"] == "on" and health["encryption_mode"] == mode_name
    # While plaintext is accepted, a warning says so (also on loopback).
    assert sec.check_listen("127.0.0.1") is None
    assert health["warnings"] == ([] if incoming else [keyfile.ACCEPTS_PLAINTEXT_WARNING])


def test_the_verify_flags_reach_the_options() -> None:
    args = cli.build_parser().parse_args(
        ["--listen", "127.0.0.1:0", "--http", "off", "--encrypt", K1, "--no-encrypt-verify-incoming"]
    )
    opts = cli._options(args)
    assert (opts.encrypt_outgoing, opts.encrypt_incoming) == (True, False)
    args = cli.build_parser().parse_args(["--listen", "127.0.0.1:0", "--http", "off", "--encrypt", K1])
    opts = cli._options(args)
    assert (opts.encrypt_outgoing, opts.encrypt_incoming) == (True, True)


def test_each_boot_draws_fresh_randomness() -> None:
    ring = keyfile.from_options(K1, None, "")
    assert ring is not None
    a, b = keyfile.make_sealer(ring, "", 1000), keyfile.make_sealer(ring, "", 1000)
    assert a.salt != b.salt and a.boot >> 16 == b.boot >> 16 == 1000  # 2^-32 that two salts match
    assert b.open(a.seal(b"{}")).body == b"{}"
