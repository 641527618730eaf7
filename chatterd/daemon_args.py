"""The daemon's command line: every option of ``chatterd --listen ...``, in groups (who the
node is, security, roles and self-supervision, output, event handlers, protocol knobs), with
the argument types that check each value as it is parsed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from chatterd.cliargs import COMMANDS, Parser, add_version, address, arg_type, positive, positive_float, positive_int
from chatterd.core import tags
from chatterd.core.config import (
    CHECK_INTERVAL,
    CHECK_TIMEOUT,
    DEFAULT_PORT,
    ENCRYPT_KEY_ENV,
    LOCK_TTL,
    MAX_LABEL,
    PROFILES,
    RESOLVE_INTERVAL,
    Config,
)
from chatterd.handlers import DEFAULT_QUEUE, DEFAULT_TIMEOUT, HandlerSpecError, parse_spec


def _parse_role(text: str) -> tuple[str, int]:
    from chatterd.core.roles import parse_role  # raises RoleError, a ValueError

    return parse_role(text)


def _parse_group(text: str) -> tuple[str, int]:
    from chatterd.core.balance import parse_group  # raises GroupError, a ValueError

    return parse_group(text)


def _check_lock_url(text: str) -> str:
    from chatterd.lock import parse_lock_url  # imported late: --help stays fast

    parse_lock_url(text)
    return text


def _parse_seed(text: str) -> object:
    from chatterd.seeds import parse_seed

    return parse_seed(text)


_seed = arg_type(_parse_seed, name="seed")
_tag = arg_type(tags.parse_pair, tags.TagsError, name="tag")
_handler = arg_type(parse_spec, HandlerSpecError, name="handler")
_role = arg_type(_parse_role, name="role")
_group = arg_type(_parse_group, name="role range")
_lock_url = arg_type(_check_lock_url, name="lock URL")


# Protocol knobs exposed as options: (option, Config field, type, help, metavar: the unit).
TUNABLES = [
    ("--fanout", "fanout", int, "peers each new message is pushed to per round", "N"),
    ("--heartbeat-interval", "heartbeat_interval", float, "seconds between heartbeats to each monitor", "SECONDS"),
    ("--monitors", "monitors", int, "how many peers watch each node's heartbeats", "N"),
    (
        "--suspect-after",
        "suspect_after",
        float,
        "seconds of heartbeat silence before a monitor suspects a node",
        "SECONDS",
    ),
    ("--suspicion-min", "suspicion_min", float, "suspicion timeout when every monitor agrees (s)", "SECONDS"),
    ("--suspicion-max", "suspicion_max", float, "suspicion timeout with a single accuser (s)", "SECONDS"),
    ("--gossip-interval", "gossip_interval", float, "seconds between retransmission rounds", "SECONDS"),
    ("--pushpull-interval", "pushpull_interval", float, "seconds between full-state exchanges", "SECONDS"),
    ("--max-datagram", "max_datagram", int, "largest datagram built, in bytes", "BYTES"),
    ("--reap-after", "reap_after", float, "seconds a dead or left member stays in the table", "SECONDS"),
    ("--rtt-interval", "rtt_interval", float, "seconds between round-trip probes for network coordinates", "SECONDS"),
]


def build_parser(parser_class: type[Parser] = Parser) -> argparse.ArgumentParser:
    """The daemon's parser (``parser_class``: chatterd.configfile's raises instead of exiting)."""
    p = parser_class(
        prog="chatterd",
        description="Run a chatter node: gossip membership, failure detection and JSON messages over UDP.",
        epilog="Log level: CHATTER_LOG (or RUST_LOG), e.g. CHATTER_LOG=warn,chatterd.membership=debug. "
        f"Ask a running node with: chatterd [--http ADDR] {{{','.join(COMMANDS)}}} "
        "(chatterd COMMAND --help). A new key for --encrypt: chatterd keygen.",
    )
    add_version(p)
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="read options from this TOML file (chatterd/configfile.py): keys are the long option names with "
        '\'_\' for \'-\', e.g. listen = "0.0.0.0:2428", join = ["10.0.0.1:2428"], tag = {dc = "east"}; '
        "options on the command line win, a repeatable one replacing the file's list",
    )
    _node_arguments(p)
    _security_arguments(p)
    _role_arguments(p)
    _app_arguments(p)
    _output_arguments(p)
    _handler_arguments(p)
    _tuning_arguments(p)
    return p


def _node_arguments(p: argparse.ArgumentParser) -> None:
    """Who the node is and where it listens and joins."""
    p.add_argument(
        "--listen",
        type=address,
        default=("0.0.0.0", DEFAULT_PORT),
        metavar="ADDR",
        help=f"UDP address to listen on, HOST:PORT or [IPV6]:PORT (default: 0.0.0.0:{DEFAULT_PORT})",
    )
    p.add_argument(
        "--join",
        "--retry-join",  # Serf's name: --join already retries until a seed answers
        dest="join",
        type=_seed,
        action="append",
        default=[],
        metavar="SEED",
        help="seed to join through: HOST:PORT, a NAME:PORT whose every A/AAAA record is a seed, "
        "dns+NAME:PORT, or dnssrv+_chatter._udp.NAME (SRV); repeatable; retried (and names resolved "
        "again) until one answers, and again when the node finds itself alone (default: none, a new cluster)",
    )
    p.add_argument(
        "--retry-interval",
        type=positive_float,
        default=RESOLVE_INTERVAL,
        metavar="SECONDS",
        help=f"how often DNS seeds are resolved again while not joined or alone (default: {RESOLVE_INTERVAL:g})",
    )
    p.add_argument("--name", metavar="NAME", help="node name, unique in the cluster (default: HOSTNAME:PORT)")
    p.add_argument(
        "--advertise",
        type=address,
        metavar="ADDR",
        help="address given to peers (default: the --listen address; on 0.0.0.0 or [::], the address of the "
        "interface that routes to the first seed, else this host's address; the start log says which and why)",
    )
    p.add_argument(
        "--http",
        default=None,
        metavar="ADDR|off",
        help="TCP address of the HTTP API (default: 127.0.0.1 at the --listen port; 'off' to disable)",
    )
    p.add_argument(
        "--http-token-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="the API's bearer token, needed by PUT/POST (and by every read but /v1/health and /metrics when "
        "--http is not loopback) (default: a new one, written with mode 0600 to --data-dir or to the user's "
        "runtime dir, where the operator commands find it)",
    )
    p.add_argument(
        "--tag",
        type=_tag,
        action="append",
        default=[],
        dest="tags",
        metavar="KEY=VALUE",
        help=f"a tag of this node, gossiped with its membership (at most {tags.MAX_TAGS_BYTES} bytes "
        "in all, as JSON); repeatable; change them later with: chatterd tags set",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the node's id, incarnation and peers in DIR/node.json, so that a restart comes back as the "
        "same node and rejoins its peers without --join (default: nothing saved)",
    )
    p.add_argument(
        "--rejoin",
        action="store_true",
        default=False,
        help="with --data-dir: join the saved peers even when the last run ended in a graceful leave (chatterd "
        "leave, SIGTERM, SIGINT), as serf agent -rejoin (default: after a graceful leave a restart does not "
        "rejoin its old peers, after a crash or SIGKILL it does; --join seeds are always joined)",
    )


def _security_arguments(p: argparse.ArgumentParser) -> None:
    """Sealed gossip (chatterd.keyfile, chatterd/core/seal.py)."""
    sec = p.add_argument_group("encryption", "every datagram sealed with AES-GCM; all nodes need the same key")
    sec.add_argument(
        "--encrypt",
        default=os.environ.get(ENCRYPT_KEY_ENV) or None,
        metavar="KEY",
        help=f"encrypt and authenticate gossip with this key (base64 of 16, 24 or 32 bytes, e.g. from "
        f"chatterd keygen; default: ${ENCRYPT_KEY_ENV}, else plaintext)",
    )
    sec.add_argument(
        "--keyring-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="the keys (JSON list of base64 keys, the first encrypts, all decrypt), mode 0600; created from "
        "--encrypt if missing, and written back whenever the keyring changes",
    )
    sec.add_argument(
        "--encrypt-verify-outgoing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="seal what this node sends (memberlist's GossipVerifyOutgoing; default: on with a key); "
        "--no-encrypt-verify-outgoing is phase 1 of turning encryption on in a running plaintext cluster",
    )
    sec.add_argument(
        "--encrypt-verify-incoming",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse plaintext datagrams (memberlist's GossipVerifyIncoming; default: on with a key); "
        "--no-encrypt-verify-incoming accepts plaintext too, while the cluster moves to encryption",
    )
    sec.add_argument(
        "--label",
        default="",
        metavar="NAME",
        help=f"the cluster's name, authenticated in every sealed datagram: clusters sharing a key but not a "
        f"label never merge (at most {MAX_LABEL} bytes; default: none)",
    )


def _role_arguments(p: argparse.ArgumentParser) -> None:
    roles = p.add_argument_group(
        "roles and self-supervision",
        "Every node elects the same holder for each role from the live candidates (highest priority, "
        "then highest name; a holder keeps its role against equal priorities). The holder gets a "
        "role-acquired event with an epoch (fencing token) that grows with every change of holder.",
    )
    roles.add_argument(
        "--role",
        type=_role,
        action="append",
        default=[],
        dest="roles",
        metavar="NAME[:PRIORITY]",
        help="this node is a candidate for role NAME (priority: an integer, default 0); repeatable",
    )
    roles.add_argument(
        "--roles",
        type=_group,
        action="append",
        default=[],
        dest="role_groups",
        metavar="PREFIXA..B[:PRIORITY]",
        help="this node is a candidate for the balanced roles PREFIXA ... PREFIXB (e.g. shard-0..15): spread "
        "evenly over their top-priority candidates, each holding about 1/N; a joiner takes back its share; "
        "repeatable",
    )
    roles.add_argument(
        "--expect",
        type=positive_int,
        default=None,
        metavar="N",
        help="hold roles only while a majority of N members is alive here: at most one side of a partition "
        "has a holder; with --lock, a holder that loses the majority also deletes its etcd key, so the majority "
        "takes over (default: available, both sides may elect one; the higher epoch wins on healing)",
    )
    roles.add_argument(
        "--lock",
        type=_lock_url,
        default=None,
        metavar="etcd://HOST:PORT/PREFIX",
        help="hold roles only while holding a lease-backed key PREFIX/ROLE in etcd; the epoch is the etcd "
        "revision; etcd unreachable: the holder steps down when its lease expires",
    )
    roles.add_argument(
        "--lock-ttl",
        type=positive_float,
        default=LOCK_TTL,
        metavar="SECONDS",
        help=f"TTL of the etcd lease (default: {LOCK_TTL:g})",
    )
    roles.add_argument(
        "--check",
        default=None,
        metavar="COMMAND",
        help="health check run every --check-interval seconds through /bin/sh; while it fails (non-zero exit "
        "or timeout) this node reports itself failing and gives up its roles",
    )
    roles.add_argument(
        "--check-interval",
        type=positive_float,
        default=CHECK_INTERVAL,
        metavar="SECONDS",
        help=f"(default: {CHECK_INTERVAL:g})",
    )
    roles.add_argument(
        "--check-timeout",
        type=positive_float,
        default=CHECK_TIMEOUT,
        metavar="SECONDS",
        help=f"(default: {CHECK_TIMEOUT:g})",
    )
    roles.add_argument(
        "--watchdog",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="exit with status 70 if this node's event loop stalls longer than this, so that a supervisor "
        "restarts it (default: off)",
    )


def _app_arguments(p: argparse.ArgumentParser) -> None:
    """A role held by the application, not only by the daemon (chatterd.app, .leases, .parent)."""
    app = p.add_argument_group(
        "binding roles to the application",
        "the node gives its roles up when the application it serves dies, not only when chatterd does",
    )
    app.add_argument(
        "--run",
        default=None,
        metavar="COMMAND",
        help="run the application as chatterd's child (through /bin/sh -c; env CHATTER_NODE, CHATTER_HTTP_ADDR, "
        "CHATTER_HTTP_TOKEN); the node is a candidate only while it runs; SIGTERM/SIGINT go to it first",
    )
    app.add_argument(
        "--restart",
        choices=["no", "on-failure", "always"],
        default=None,
        help="when the --run application exits: no (default: chatterd leaves and exits with its status), "
        "on-failure (start it again after a non-zero exit or a signal, with a back-off), always",
    )
    app.add_argument(
        "--lease-ttl",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="offer each --role only while the application renews its lease (POST /v1/roles/NAME/lease, "
        "every TTL/3) within this many seconds; withheld until the first renewal (default: no lease)",
    )
    app.add_argument(
        "--exit-with-parent",
        action="store_true",
        default=False,
        help="a sidecar: leave gracefully and exit when the process that started chatterd dies",
    )


def _output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="lan",
        help="timing profile: lan (default) or local (shorter timers, one host)",
    )
    p.add_argument(
        "--log-format",
        choices=["auto", "console", "json"],
        default="auto",
        help="console lines on a terminal, JSON lines otherwise (default: auto)",
    )


def _handler_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--event-handler",
        type=_handler,
        action="append",
        default=[],
        dest="handlers",
        metavar="[FILTER=]COMMAND",
        help="run COMMAND (through /bin/sh -c) for each event FILTER matches: an event type (member-join, "
        "member-leave, member-failed, member-update, member-recover, member-suspect, member-alive, debug, "
        "device, view, user, role-acquired, role-lost), user:NAME, * or a comma list; no filter = every event; "
        "the event comes as JSON on stdin; repeatable. query:NAME=COMMAND answers the queries named NAME: "
        "COMMAND reads the payload on stdin, its stdout is the response",
    )
    p.add_argument(
        "--handler-queue",
        type=positive_int,
        default=DEFAULT_QUEUE,
        metavar="N",
        help=f"events waiting for handlers beyond which new ones are dropped (default: {DEFAULT_QUEUE})",
    )
    p.add_argument(
        "--handler-timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"a handler still running after this is killed (default: {DEFAULT_TIMEOUT:g})",
    )


def _tuning_arguments(p: argparse.ArgumentParser) -> None:
    """The protocol knobs: each overrides one field of the chosen profile."""
    defaults = Config()
    for opt, fieldname, kind, text, unit in TUNABLES:
        p.add_argument(
            opt,
            type=positive(kind),
            dest=fieldname,
            default=None,
            metavar=unit,
            help=f"{text} (default: {getattr(defaults, fieldname)} in the lan profile)",
        )
