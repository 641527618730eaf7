"""What the command-line tools share: the argument parser that fails in one line, and the
argument types (addresses, positive numbers). Used by ``chatterd`` (chatterd.cli), its
operator commands (chatterd.ctl) and ``chatter-inject`` (chatter_inject.cli).

Light on imports: ``chatterd members`` and ``chatterd --help`` must start fast.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn, TypeVar

from chatterd.core import wire

# The operator commands of `chatterd COMMAND` (chatterd/ctl.py); anything else runs the daemon.
COMMANDS = (
    "members",
    "devices",
    "events",
    "leave",
    "tags",
    "roles",
    "keys",
    "query",
    "reachability",
    "rtt",
    "info",
    "force-leave",
    "monitor",
    "join",
)

EXIT_USAGE = 2  # bad arguments: nothing was done
DISTRIBUTION = "chatter"  # the package whose metadata gives --version

T = TypeVar("T")
N = TypeVar("N", int, float)
Addr = tuple[str, int]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one clear line and exit status 2 (argparse prints the
    whole usage otherwise)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def arg_type(parse: Callable[[str], T], *errors: type[Exception], name: str | None = None) -> Callable[[str], T]:
    """An argparse ``type=`` from a parser that raises ``errors`` (default ValueError) with a
    clear text: that text becomes argparse's message ("argument --x: <text>")."""
    caught = errors or (ValueError,)

    def conv(text: str) -> T:
        try:
            return parse(text)
        except caught as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    conv.__name__ = name or str(getattr(parse, "__name__", "value"))
    return conv


def positive(kind: Callable[[str], N]) -> Callable[[str], N]:
    """An argparse ``type=`` for a finite number (``int`` or ``float``) above 0: ``nan`` and
    ``inf`` parse as floats, but no interval or timeout can be either."""

    def conv(text: str) -> N:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        return v

    conv.__name__ = str(getattr(kind, "__name__", "number"))
    return conv


positive_int = positive(int)
positive_float = positive(float)

# HOST:PORT, :PORT or PORT (host 127.0.0.1), as chatterd.core.wire.parse_addr reads it.
address: Callable[[str], Addr] = arg_type(wire.parse_addr, name="address")


def _parse_http_addr(text: str) -> Addr:
    return wire.parse_addr(text.strip().removeprefix("http://").rstrip("/"))


# The address of a node's HTTP API: the same, also as a URL (http://HOST:PORT/).
http_address: Callable[[str], Addr] = arg_type(_parse_http_addr, name="address")


def version() -> str:
    """The installed package's version (its metadata), for ``--version``."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed as a package)"


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the program's name and the package's version, then exit 0."""
    parser.add_argument(
        "--version", action="version", version=f"{parser.prog} {version()}", help="print the version and exit"
    )
