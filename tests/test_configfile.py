"""chatterd --config FILE (chatterd.configfile): each TOML key gives the same options as the
command-line option it names, the command line wins (a repeatable option replacing the file's
list), and every bad file is one line naming the file and the key, with exit status 2."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from chatterd import cli, configfile
from chatterd.configfile import ConfigError, file_options, load, parse_daemon_args
from chatterd.core.config import ENCRYPT_KEY_ENV
from chatterd.core.keyring import encode_key
from chatterd.daemon_args import build_parser

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "chatterd.toml"
K1 = encode_key(bytes(range(32)))


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "chatterd.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def from_cli(argv: list[str]) -> dict[str, object]:
    """What the command line alone gives (without the config option)."""
    out = vars(build_parser().parse_args(argv))
    out.pop("config")
    return out


def from_file(tmp_path: Path, text: str, argv: tuple[str, ...] = ()) -> dict[str, object]:
    out = vars(parse_daemon_args(["--config", str(write(tmp_path, text)), *argv]))
    out.pop("config")
    return out


# Each key against the command line it stands for: the same namespace, option by option.
SAME_AS_CLI = [
    ('listen = "127.0.0.1:7000"', ["--listen", "127.0.0.1:7000"]),
    ('listen = ":7000"', ["--listen", ":7000"]),
    ("rejoin = true", ["--rejoin"]),
    ('join = ["127.0.0.1:1", "127.0.0.1:2"]', ["--join", "127.0.0.1:1", "--join", "127.0.0.1:2"]),
    ("join = []", []),
    ('retry_join = ["dns+chatter.svc:2428"]', ["--retry-join", "dns+chatter.svc:2428"]),  # Serf's key
    ("retry_interval = 2.5", ["--retry-interval", "2.5"]),
    ('name = "-n1"', ["--name=-n1"]),  # a value starting with a dash stays a value
    ('advertise = "10.1.2.3:2428"', ["--advertise", "10.1.2.3:2428"]),
    ('http = "off"', ["--http", "off"]),
    ('http_token_file = "/run/token"', ["--http-token-file", "/run/token"]),
    ('tag = {dc = "east", rack = "r 1", empty = ""}', ["--tag", "dc=east", "--tag", "rack=r 1", "--tag", "empty="]),
    ('tag = ["dc=east", "a=b=c"]', ["--tag", "dc=east", "--tag", "a=b=c"]),
    ('data_dir = "/var/lib/chatterd"', ["--data-dir", "/var/lib/chatterd"]),
    (f'encrypt = "{K1}"', ["--encrypt", K1]),
    ('keyring_file = "k.json"', ["--keyring-file", "k.json"]),
    ("encrypt_verify_outgoing = false", ["--no-encrypt-verify-outgoing"]),
    ("encrypt_verify_incoming = false", ["--no-encrypt-verify-incoming"]),
    ('label = "prod"', ["--label", "prod"]),
    ('role = ["leader:2", "backup"]', ["--role", "leader:2", "--role", "backup"]),
    ('roles = ["shard-0..7:2"]', ["--roles", "shard-0..7:2"]),
    ("expect = 3", ["--expect", "3"]),
    ('expect = "3"', ["--expect", "3"]),  # a number in a string, as on the command line
    ('lock = "etcd://127.0.0.1:2379/chatter"', ["--lock", "etcd://127.0.0.1:2379/chatter"]),
    ("lock_ttl = 2", ["--lock-ttl", "2"]),
    ('check = "test -e /tmp/ok"', ["--check", "test -e /tmp/ok"]),
    ("check_interval = 0.5", ["--check-interval", "0.5"]),
    ("check_timeout = 4", ["--check-timeout", "4"]),
    ("watchdog = 10.0", ["--watchdog", "10.0"]),
    ('run = "exec ./app --serve"', ["--run", "exec ./app --serve"]),
    ('restart = "on-failure"', ["--restart", "on-failure"]),
    ("lease_ttl = 3", ["--lease-ttl", "3"]),
    ("exit_with_parent = true", ["--exit-with-parent"]),
    ('profile = "local"', ["--profile", "local"]),
    ('log_format = "json"', ["--log-format", "json"]),
    (
        'event_handler = ["member-failed=./page", "cat"]',
        ["--event-handler", "member-failed=./page", "--event-handler", "cat"],
    ),
    ("handler_queue = 10", ["--handler-queue", "10"]),
    ("handler_timeout = 1.5", ["--handler-timeout", "1.5"]),
    ("fanout = 4", ["--fanout", "4"]),
    ("heartbeat_interval = 0.25", ["--heartbeat-interval", "0.25"]),
    ("monitors = 5", ["--monitors", "5"]),
    ("suspect_after = 1.5", ["--suspect-after", "1.5"]),
    ("suspicion_min = 1", ["--suspicion-min", "1"]),
    ("suspicion_max = 6", ["--suspicion-max", "6"]),
    ("gossip_interval = 0.2", ["--gossip-interval", "0.2"]),
    ("pushpull_interval = 30", ["--pushpull-interval", "30"]),
    ("max_datagram = 1200", ["--max-datagram", "1200"]),
    ("reap_after = 600", ["--reap-after", "600"]),
    ("rtt_interval = 10", ["--rtt-interval", "10"]),
]


@pytest.mark.parametrize(("toml", "argv"), SAME_AS_CLI, ids=[t.split(" ")[0] for t, _ in SAME_AS_CLI])
def test_a_key_gives_what_its_option_gives(tmp_path: Path, toml: str, argv: list[str]) -> None:
    assert argv == [] or from_cli(argv) != from_cli([]), "the case must change something"
    assert from_file(tmp_path, toml) == from_cli(argv)


def test_the_tokens_of_each_kind_of_value() -> None:
    options = file_options(build_parser())
    assert configfile.tokens_for("encrypt_verify_incoming", True, options["encrypt_verify_incoming"]) == [
        "--encrypt-verify-incoming"
    ]
    assert configfile.tokens_for("encrypt_verify_incoming", False, options["encrypt_verify_incoming"]) == [
        "--no-encrypt-verify-incoming"
    ]
    assert configfile.tokens_for("tag", {"a": "1", "b": ""}, options["tag"]) == ["--tag=a=1", "--tag=b="]
    assert configfile.tokens_for("check_interval", 2, options["check_interval"]) == ["--check-interval=2"]
    assert configfile.tokens_for("listen", ":1", options["listen"]) == ["--listen=:1"]


def test_every_option_of_the_daemon_is_a_key_and_every_key_is_covered_above() -> None:
    longs = {
        s[2:].replace("-", "_")
        for a in build_parser()._actions
        for s in a.option_strings
        if s.startswith("--") and not s.startswith("--no-")
    }
    assert set(file_options(build_parser())) == longs - {"help", "config", "version"}
    assert {t.split(" ")[0] for t, _ in SAME_AS_CLI} == set(file_options(build_parser()))


def test_a_whole_file_gives_the_whole_command_line(tmp_path: Path) -> None:
    first = {t.split(" ")[0]: (t, argv) for t, argv in reversed(SAME_AS_CLI)}  # one case per key
    toml = "\n".join(t for t, _ in first.values())
    assert from_file(tmp_path, toml) == from_cli([a for _, argv in first.values() for a in argv])


def test_the_command_line_wins_and_a_repeatable_option_there_replaces_the_files_list(tmp_path: Path) -> None:
    toml = 'listen = "127.0.0.1:7000"\njoin = ["127.0.0.1:1", "127.0.0.1:2"]\ntag = {dc = "east"}\nfanout = 4'
    got = from_file(tmp_path, toml, ("--join", "127.0.0.1:3", "--fanout", "6"))
    assert [s.literal for s in got["join"]] == [("127.0.0.1", 3)]  # replaced, not appended
    assert got["fanout"] == 6
    assert got["listen"] == ("127.0.0.1", 7000) and got["tags"] == [("dc", "east")]  # kept from the file


def test_an_option_given_at_its_default_value_on_the_command_line_still_wins(tmp_path: Path) -> None:
    toml = 'listen = "127.0.0.1:7000"\nprofile = "local"\nencrypt_verify_incoming = false'
    got = from_file(tmp_path, toml, ("--listen", "0.0.0.0:2428", "--profile", "lan", "--encrypt-verify-incoming"))
    assert got["listen"] == ("0.0.0.0", 2428) and got["profile"] == "lan"
    assert got["encrypt_verify_incoming"] is True


def test_the_env_key_is_the_default_a_files_encrypt_and_the_command_line_win_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = encode_key(bytes(16))
    monkeypatch.setenv(ENCRYPT_KEY_ENV, other)
    assert from_file(tmp_path, 'label = "x"')["encrypt"] == other
    assert from_file(tmp_path, f'encrypt = "{K1}"')["encrypt"] == K1
    assert from_file(tmp_path, f'encrypt = "{K1}"', ("--encrypt", other))["encrypt"] == other


def test_the_example_config_parses_with_the_keys_it_sets() -> None:
    ns = load(EXAMPLE)
    assert ns.listen == ("0.0.0.0", 2428)
    assert [s.literal for s in ns.join] == [("192.0.2.11", 2428), ("192.0.2.12", 2428), ("192.0.2.13", 2428)]
    assert ns.data_dir == Path("/var/lib/chatterd") and ns.http == "127.0.0.1:2428"
    assert ns.keyring_file == Path("/var/lib/chatterd/keyring.json") and ns.label == "prod"
    assert ns.tags == [("dc", "east"), ("rack", "r12")]
    assert ns.log_format == "json" and ns.watchdog == 10.0
    assert ns.encrypt is None or ns.encrypt == os.environ.get(ENCRYPT_KEY_ENV)  # no key in the example
    assert set(configfile.read_table(EXAMPLE)) == {
        "listen", "join", "data_dir", "http", "keyring_file", "label", "tag", "log_format", "watchdog",
    }  # fmt: skip


def test_the_container_images_config_parses_with_the_keys_it_sets() -> None:
    path = ROOT / "deploy" / "container.toml"
    ns = load(path)
    assert ns.listen == ("0.0.0.0", 2428) and ns.http == "0.0.0.0:2428"
    assert ns.data_dir == Path("/var/lib/chatterd") and ns.log_format == "json"
    assert set(configfile.read_table(path)) == {"listen", "http", "data_dir", "log_format"}


BAD_FILES = [
    ('lisen = "127.0.0.1:1"', "key 'lisen': unknown key (did you mean 'listen'?)"),
    ('data-dir = "/x"', "key 'data-dir': unknown key (write option names with underscores: 'data_dir')"),
    ("zzz = 1", "key 'zzz': unknown key (known keys: listen, join,"),
    ('config = "other.toml"', "key 'config': a config file cannot name another one"),
    ("help = true", "key 'help': unknown key"),
    ('listen = "nowhere"', "key 'listen': invalid address 'nowhere': expected HOST:PORT"),
    ('listen = "127.0.0.1:99999"', "key 'listen': invalid address '127.0.0.1:99999': port must be 0-65535"),
    ("listen = true", "key 'listen': expected a string, got a boolean"),
    ('join = "127.0.0.1:1"', "key 'join': expected an array of strings, got a string"),
    ("join = [1, 2]", "key 'join': expected an array of strings, got an array"),
    ('join = ["127.0.0.1:1", "nope"]', "key 'join': invalid address 'nope'"),
    ("name = 5", "key 'name': expected a string, got an integer"),
    ("name = 1979-05-27", "key 'name': expected a string, got a date or time"),
    ("fanout = 0", "key 'fanout': must be > 0, got '0'"),
    ("fanout = 1.5", "key 'fanout': expected a number, got '1.5'"),
    ("fanout = [1]", "key 'fanout': expected a number, got an array"),
    ("expect = true", "key 'expect': expected a number, got a boolean"),
    ("check_interval = -1", "key 'check_interval': must be > 0"),
    ('profile = "wan"', "key 'profile': invalid choice: 'wan'"),
    ("encrypt_verify_incoming = 0", "key 'encrypt_verify_incoming': expected true or false, got an integer"),
    ('encrypt_verify_incoming = "no"', "key 'encrypt_verify_incoming': expected true or false, got a string"),
    ("tag = {rack = 12}", "key 'tag': the value of 'rack' must be a string, got an integer"),
    ('tag = {"a=b" = "c"}', "key 'tag': invalid tag key 'a=b': must not contain '='"),
    ('tag = {"a b" = "c"}', "key 'tag': invalid tag 'a b=c'"),
    ('tag = "dc=east"', "key 'tag': expected an array of strings or a table of strings, got a string"),
    ('tag = ["noequals"]', "key 'tag': invalid tag 'noequals': expected KEY=VALUE"),
    ('roles = ["shard-3..1"]', "key 'roles': invalid role range 'shard-3..1'"),
    ('role = ["a:b"]', "key 'role': invalid role priority in 'a:b'"),
    ('event_handler = ["member-fialed=x"]', "key 'event_handler': unknown event type 'member-fialed'"),
    ('lock = "http://x"', "key 'lock':"),
    ("[node]\nname = 'x'", "key 'node': unknown key"),
    ("listen = ", "invalid TOML: "),
    ('listen = "a"\nlisten = "b"', "invalid TOML: "),
]


@pytest.mark.parametrize(("toml", "mentions"), BAD_FILES, ids=[t.replace("\n", " ") for t, _ in BAD_FILES])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key_with_exit_2(
    tmp_path: Path, toml: str, mentions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(SystemExit) as exit_info:
        parse_daemon_args(["--config", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"chatterd: error: config file {path}: "), err
    assert mentions in err, err


def test_cli_main_refuses_a_bad_file_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:0"\nfanout = -3')
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--config", str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"chatterd: error: config file {path}: key 'fanout': must be > 0, got '-3'\n"


def test_the_options_checks_after_parsing_apply_to_the_files_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checks cli.py makes on the parsed options (a key's base64, --label without a key)
    see the file's values as they see the command line's."""
    path = write(tmp_path, 'listen = "127.0.0.1:0"\nhttp = "off"\nlabel = "prod"')
    assert cli.main(["--config", str(path)]) == 2
    assert capsys.readouterr().err == "chatterd: error: --label needs --encrypt or --keyring-file\n"


def unreadable_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    missing = tmp_path / "missing.toml"
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b'name = "caf\xe9"\n')
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * configfile.MAX_CONFIG_FILE + "\n")
    return {
        "missing": (missing, f"cannot read config file {missing}: No such file or directory"),
        "directory": (tmp_path, f"config file {tmp_path} is not a regular file"),
        "fifo": (fifo, f"config file {fifo} is not a regular file"),
        "not-utf8": (binary, f"config file {binary}: not UTF-8 text"),
        "too-big": (big, f"config file {big} is larger than {configfile.MAX_CONFIG_FILE} bytes"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "fifo", "not-utf8", "too-big"])
def test_an_unusable_file_is_one_line_and_exit_2(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, message = unreadable_cases(tmp_path)[case]
    with pytest.raises(SystemExit) as exit_info:
        parse_daemon_args(["--config", str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"chatterd: error: {message}\n"


def test_a_file_others_can_read_may_not_hold_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, f'encrypt = "{K1}"', mode=0o644)
    with pytest.raises(ConfigError, match=r"sets encrypt and other users can read it \(mode 644\)"):
        load(path)
    path.chmod(0o640)  # the group may read it (a keyring file's rule: others may not)
    assert load(path).encrypt == K1
    write(tmp_path, 'label = "prod"', mode=0o644)  # no key in it: any mode
    assert load(path).label == "prod"


def test_help_and_a_bad_command_line_come_before_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_daemon_args(["--config", str(tmp_path / "missing.toml"), "--fanout", "x"])
    assert exit_info.value.code == 2
    assert "argument --fanout" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        parse_daemon_args(["--help"])
    assert exit_info.value.code == 0
    assert "--config PATH" in capsys.readouterr().out


def test_without_config_the_command_line_is_parsed_as_before() -> None:
    argv = ["--listen", "127.0.0.1:1", "--join", "127.0.0.1:2", "--tag", "a=b"]
    assert parse_daemon_args(argv) == build_parser().parse_args(argv)
    assert isinstance(parse_daemon_args([]), argparse.Namespace)
