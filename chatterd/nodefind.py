"""Which node an operator command asks (chatterd.ctl): the first of

1. ``--http ADDR``, given before the command (``chatterd --http ADDR members``) or after it;
2. ``$CHATTER_HTTP_ADDR``;
3. a node that this user started on this host, from its runtime file (chatterd.runfile); with
   several, the one with the lowest address, and a line on stderr says which and how to pick;
4. ``127.0.0.1:2428``, where a node started with the default ``--listen`` serves its API.

When nothing answers there, the error says where the address came from, what else was tried,
and how to point the command at a node (:meth:`Found.unreachable`). Also here: moving the
options given before the command to after it (:func:`hoist`), so that argparse's subcommands
see them. Light on imports: the commands start fast.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from chatterd import runfile
from chatterd.cliargs import http_address
from chatterd.core import wire
from chatterd.core.config import DEFAULT_PORT

Addr = tuple[str, int]

ENV_HTTP = "CHATTER_HTTP_ADDR"
DEFAULT_HTTP = f"127.0.0.1:{DEFAULT_PORT}"
POINT = f"point the command at a node with --http ADDR or {ENV_HTTP}=ADDR"
# The options every operator command takes, which may also come before the command's name.
GLOBAL_OPTIONS = ("--http", "--token-file", "--data-dir")


class FindError(ValueError):
    """A bad address where one was looked for ($CHATTER_HTTP_ADDR): one line."""


@dataclass
class Found:
    """The address to ask, where it came from, and what was looked at before it."""

    addr: Addr
    source: str  # in words: "the address given by --http", ...
    tried: list[str] = field(default_factory=list)
    note: str | None = None  # for stderr: several nodes run here, this one was chosen

    def unreachable(self, error: str) -> str:
        """The one line for a node that does not answer at ``addr`` (``error`` says so)."""
        text = f"{error}: {self.source}"
        if self.tried:
            text += f" (tried before it: {'; '.join(self.tried)})"
        return f"{text}; {POINT}"


def find(given: Addr | None, env: Mapping[str, str] | None = None, nodes: list[runfile.RunFile] | None = None) -> Found:
    """The node to ask (``nodes``: the runtime files, read when None). Raises FindError."""
    env = os.environ if env is None else env
    if given is not None:
        return Found(given, "the address given by --http")
    tried = ["--http (not given)"]
    text = env.get(ENV_HTTP, "").strip()
    if text:
        try:
            return Found(http_address(text), f"the address in ${ENV_HTTP}", tried)
        except argparse.ArgumentTypeError as e:
            raise FindError(f"{ENV_HTTP}: {e}") from None
    tried.append(f"${ENV_HTTP} (not set)")
    nodes = runfile.running() if nodes is None else nodes
    if nodes:
        first = nodes[0]
        source = f"the node {first.name!r} this user started here (runtime file {first.path})"
        note = None
        if len(nodes) > 1:
            others = ", ".join(f"{n.name} at {wire.format_addr(n.http)}" for n in nodes)
            note = (
                f"{len(nodes)} nodes of this user run here ({others}): asking {first.name} at "
                f"{wire.format_addr(first.http)}, the lowest address; {POINT}"
            )
        return Found(first.http, source, tried, note)
    tried.append(f"a node started by this user on this host (no runtime file in {runfile.where()})")
    return Found(http_address(DEFAULT_HTTP), f"the default address {DEFAULT_HTTP}", tried)


def hoist(argv: list[str], commands: Collection[str]) -> list[str] | None:
    """``argv`` with the global options before the command moved after its name
    (``--http A members --json`` → ``members --http A --json``); None when ``argv`` does not
    name a command after those options (it is the daemon's command line)."""
    front: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag = arg.partition("=")[0]
        if flag not in GLOBAL_OPTIONS:
            break
        take = 1 if "=" in arg else 2
        if i + take > len(argv):
            return None
        front += argv[i : i + take]
        i += take
    if i < len(argv) and argv[i] in commands:
        return [argv[i], *front, *argv[i + 1 :]]
    return None
