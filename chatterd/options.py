"""What the daemon was told to do: every option of the command line, checked (chatterd.cli)."""

from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

from chatterd.core.config import (
    CHECK_INTERVAL,
    CHECK_TIMEOUT,
    EVENT_BUFFER,
    LEAVE_LINGER,
    LOCK_TTL,
    LOOP_FAILURES_FATAL,
    RESOLVE_INTERVAL,
    Config,
)
from chatterd.core.keyring import Keyring
from chatterd.handlers import DEFAULT_QUEUE, DEFAULT_TIMEOUT, HandlerSpec
from chatterd.seeds import Seed

Addr = tuple[str, int]


@dataclass
class Options:
    listen: Addr
    name: str
    config: Config
    advertise: Addr | None = None
    seeds: list[Addr] = field(default_factory=list)  # --join addresses
    discover: list[Seed] = field(default_factory=list)  # --join names (DNS: A/AAAA, SRV)
    retry_interval: float = RESOLVE_INTERVAL  # --retry-interval: names resolved again this often
    http: Addr | None = None
    http_token_file: Path | None = None  # --http-token-file (else the node makes one: chatterd.httpauth)
    event_buffer: int = EVENT_BUFFER
    leave_linger: float = LEAVE_LINGER  # let the leave datagrams go out before the socket closes
    handlers: list[HandlerSpec] = field(default_factory=list)  # --event-handler
    handler_queue: int = DEFAULT_QUEUE
    handler_timeout: float = DEFAULT_TIMEOUT
    tags: dict[str, str] = field(default_factory=dict)  # --tag
    data_dir: Path | None = None  # --data-dir: identity saved here (chatterd.persistence)
    roles: dict[str, int] = field(default_factory=dict)  # --role NAME:PRIORITY (as role: tags)
    role_groups: dict[str, int] = field(default_factory=dict)  # --roles A..B:PRIORITY (as roles: tags)
    expect: int | None = None  # --expect N: hold roles only while a majority of N is alive
    lock: str | None = None  # --lock etcd://HOST:PORT/PREFIX: roles also need an etcd lease
    lock_ttl: float = LOCK_TTL
    check: str | None = None  # --check COMMAND
    check_interval: float = CHECK_INTERVAL
    check_timeout: float = CHECK_TIMEOUT
    watchdog: float | None = None  # --watchdog SECONDS
    run: str | None = None  # --run COMMAND: the application, our child (chatterd.app)
    restart: str = "no"  # --restart no|on-failure|always
    lease_ttl: float | None = None  # --lease-ttl SECONDS: roles offered while leased (chatterd.leases)
    parent_pid: int | None = None  # --exit-with-parent: our parent's pid at start (chatterd.parent)
    loop_failures_fatal: int = LOOP_FAILURES_FATAL  # timer failures in a row before the node exits
    keyring: Keyring | None = None  # --encrypt / --keyring-file: sealed gossip (chatterd.keyfile)
    keyring_file: Path | None = None  # written back whenever the keyring changes
    label: str = ""  # --label: the cluster's name, authenticated in every sealed datagram
    encrypt_outgoing: bool = True  # --[no-]encrypt-verify-outgoing: seal what we send (with a key)
    encrypt_incoming: bool = True  # --[no-]encrypt-verify-incoming: refuse plaintext (with a key)
    profile: str = "lan"  # --profile: the timing profile the config starts from (chatterd info says it)
    rejoin: bool = False  # --rejoin: join the peers --data-dir saved even after a graceful leave
    argv: list[str] | None = None  # the command line: read again, with --config, on SIGHUP (chatterd.reload)
    launch: Namespace | None = None  # the options as parsed at the start: what a SIGHUP compares with
    config_file: Path | None = None  # --config
