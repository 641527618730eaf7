"""The daemon's options from a TOML file: ``chatterd --config /etc/chatterd/chatterd.toml``.

A fleet manages one file instead of long command lines. Every option of the daemon's command
line (chatterd.daemon_args) can be a key: the long option name without its leading dashes and
with underscores for the dashes inside (``data_dir``, ``http_token_file``,
``encrypt_verify_incoming``). A value is what the option takes on the command line:

* a TOML string for an option that takes text (``listen = "0.0.0.0:2428"``), or a number for
  one that takes a number (``fanout = 3``, ``check_interval = 2.5``; a string works too);
* an array of strings for a repeatable option (``join = ["10.0.0.1:2428"]``, ``role =
  ["leader:2"]``, ``event_handler = [...]``); ``tag`` is a table (``tag = {dc = "east"}``) or
  an array of ``"KEY=VALUE"``;
* ``true`` / ``false`` for an on/off flag (``encrypt_verify_incoming = false`` is
  ``--no-encrypt-verify-incoming``).

Each value becomes the command-line token it stands for (``--listen=0.0.0.0:2428``) and is
parsed by the daemon's own parser, so a value in the file passes exactly the checks the same
value gets on the command line. The options given on the command line win over the file; a
repeatable option given there replaces the file's whole list (``--join X`` drops the file's
``join``). Unset options keep their defaults (``$CHATTER_ENCRYPT_KEY`` is the default of
``encrypt``, so a file's ``encrypt`` wins over the variable). Relative paths are relative to
the daemon's working directory, as on the command line.

A bad file (unreadable, not TOML, an unknown key, a value of the wrong type or one the option
refuses) is one line on stderr naming the file and the key, and exit status 2: nothing starts.
A file that sets ``encrypt`` and that other users may read is refused, as a keyring file is.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import stat
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from chatterd.cliargs import EXIT_USAGE, Parser
from chatterd.daemon_args import build_parser

MAX_CONFIG_FILE = 1024 * 1024  # a config file is a few KiB: anything this big is not one
CONFIG_KEY = "config"  # the option that names the file: not a key of the file itself
PAIR_KEYS = {"tag"}  # repeatable KEY=VALUE options: a TOML table works too
_ARGUMENT_PREFIX = re.compile(r"^argument [^:]+: ")


class ConfigError(Exception):
    """A config file that cannot be used: one line saying which file, which key, and why."""


class _FileParser(Parser):
    """The daemon's parser, raising instead of exiting, so that the error can name the file and key."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def parse_daemon_args(argv: Sequence[str]) -> argparse.Namespace:
    """The daemon's options: the command line over the ``--config`` file when one is given.
    A bad command line or a bad file: one line on stderr and exit status 2 (SystemExit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        return args
    try:
        from_file = load(args.config)
    except ConfigError as e:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {e}\n")
    return argparse.Namespace(**(vars(from_file) | given_on_command_line(argv)))


def given_on_command_line(argv: Sequence[str]) -> dict[str, Any]:
    """The options ``argv`` sets, and only those (an option set to its default value is set):
    the parser's defaults are suppressed, so an option absent from ``argv`` is absent here."""
    parser = build_parser()
    for action in parser._actions:  # argparse has no public list of its actions
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def load(path: Path) -> argparse.Namespace:
    """Every option of the daemon: the file's values, the parser's defaults for the rest.
    Raises ConfigError."""
    table = read_table(path)
    return namespace_from_table(table, str(path))


def read_table(path: Path) -> dict[str, Any]:
    """The TOML table in ``path`` (a regular file, UTF-8, at most MAX_CONFIG_FILE bytes).
    Raises ConfigError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the start
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(f"config file {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_CONFIG_FILE + 1)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    if len(data) > MAX_CONFIG_FILE:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_FILE} bytes")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: invalid TOML: {e}") from None
    if "encrypt" in table and st.st_mode & 0o007:
        raise ConfigError(
            f"config file {path} sets encrypt and other users can read it (mode {st.st_mode & 0o777:o}): "
            "chmod o-rwx it, or better keep the key in keyring_file or $CHATTER_ENCRYPT_KEY"
        )
    return table


def namespace_from_table(table: dict[str, Any], source: str = "config file") -> argparse.Namespace:
    """Every option of the daemon from a TOML table: each key parsed on its own by the daemon's
    parser (so that an error names its key), into one namespace that starts from the defaults.
    Raises ConfigError naming ``source`` and the key."""
    parser = build_parser(_FileParser)
    options = file_options(parser)
    ns = parser.parse_args([])
    for key, value in table.items():
        try:
            option = options.get(key)
            if option is None:
                raise ConfigError(_unknown_key(key, options))
            parser.parse_args(tokens_for(key, value, option), namespace=ns)
        except ConfigError as e:
            reason = _ARGUMENT_PREFIX.sub("", str(e))  # argparse's "argument --x: ": the key says it
            raise ConfigError(f"config file {source}: key {key!r}: {reason}") from None
    return ns


@dataclass(frozen=True)
class FileOption:
    """An option a config file may set: its command-line flag and its argparse action."""

    flag: str
    action: argparse.Action


def file_options(parser: argparse.ArgumentParser) -> dict[str, FileOption]:
    """Each option a file may set, by key: ``--data-dir`` is ``data_dir``; for an on/off flag
    (``--x`` / ``--no-x``) the key is the positive name. Not ``--help``, not ``--config``."""
    out: dict[str, FileOption] = {}
    for action in parser._actions:  # argparse has no public list of its actions
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        for opt in action.option_strings:
            negative = isinstance(action, argparse.BooleanOptionalAction) and opt.startswith("--no-")
            key = opt[2:].replace("-", "_")
            if opt.startswith("--") and not negative and key != CONFIG_KEY:
                out[key] = FileOption(opt, action)
    return out


def tokens_for(key: str, value: object, option: FileOption) -> list[str]:
    """The command-line tokens that stand for ``key = value`` (``["--listen=HOST:PORT"]``); the
    parser checks them. Raises ConfigError for a TOML value of the wrong type."""
    flag, action = option.flag, option.action
    if action.nargs == 0:  # an on/off flag
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {_toml_type(value)}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [flag if value else "--no-" + flag[2:]]
        return [flag] if value else []
    if isinstance(action, argparse._AppendAction):
        return [f"{flag}={item}" for item in _list_items(key, value)]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"expected {_scalar_kind(action)}, got {_toml_type(value)}")
    if not isinstance(value, str) and not _numeric(action):
        raise ConfigError(f"expected a string, got {_toml_type(value)}")
    return [f"{flag}={value}"]


def _list_items(key: str, value: object) -> list[str]:
    """The values of a repeatable option: an array of strings; for ``tag`` also a table."""
    if key in PAIR_KEYS and isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(v, str):
                raise ConfigError(f"the value of {k!r} must be a string, got {_toml_type(v)}")
            if "=" in k:
                raise ConfigError(f"invalid tag key {k!r}: must not contain '='")
            items.append(f"{k}={v}")
        return items
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        table = " or a table of strings" if key in PAIR_KEYS else ""
        raise ConfigError(f"expected an array of strings{table}, got {_toml_type(value)}")
    return list(value)


def _numeric(action: argparse.Action) -> bool:
    """Whether the option takes a number (its type is int, float, or chatterd.cliargs.positive of one)."""
    return getattr(action.type, "__name__", None) in ("int", "float")


def _scalar_kind(action: argparse.Action) -> str:
    return "a number" if _numeric(action) else "a string"


def _toml_type(value: object) -> str:
    """The TOML name of a parsed value's type, for error messages."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}
    name = names.get(type(value))
    if name is not None:
        return name
    return "a table" if isinstance(value, dict) else "a date or time"


def _unknown_key(key: str, options: dict[str, FileOption]) -> str:
    """ "unknown key" with a hint: the underscore spelling, or the closest known key."""
    if key == CONFIG_KEY:
        return "a config file cannot name another one (give --config on the command line)"
    spelled = key.replace("-", "_").lstrip("_")
    if spelled in options:
        return f"unknown key (write option names with underscores: {spelled!r})"
    close = difflib.get_close_matches(spelled, list(options), n=1)
    return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(options)})")
