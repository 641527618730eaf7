"""chatterd: run one chatter node, or ask a running one (chatterd.ctl).

chatterd --listen 127.0.0.1:8080 --join 127.0.0.1:8081 --name n1
chatterd members --http 127.0.0.1:8080
chatterd keygen

``keygen`` prints a new random key for --encrypt (like ``serf keygen``).

A first argument that names an operator command (chatterd.cliargs.COMMANDS: members,
devices, events, leave, tags, roles, keys, ...), possibly after the options every command
takes (``chatterd --http ADDR members``: chatterd.nodefind), selects the client; anything
else is the daemon's command line, as it always was.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from chatterd import nodefind
from chatterd.cliargs import COMMANDS
from chatterd.configfile import parse_daemon_args
from chatterd.core import tags, wire
from chatterd.core.config import (
    LOOP_FAILURE_EXIT,
    PROFILES,
    SEAL_OVERHEAD,
    Config,
)
from chatterd.daemon_args import build_parser  # noqa: F401  (re-exported: tests use cli.build_parser)

if TYPE_CHECKING:
    from chatterd.runtime import Options


def sealed_config(config: Config, ring: object) -> Config:
    """The config the node will run with: with a keyring, datagrams are built smaller by the seal."""
    return config if ring is None else config.replace(max_datagram=config.max_datagram - SEAL_OVERHEAD)


def _check_token_file(path: Path | None) -> None:
    """--http-token-file, checked before the node exists (the runtime reads it again)."""
    if path is None:
        return
    from chatterd.httpauth import TokenError, read_token

    try:
        read_token(path)
    except TokenError as e:
        raise _Fail(f"--http-token-file: {e}") from None


def _check_app_options(args: argparse.Namespace) -> None:
    """The options that bind roles to the application, checked together."""
    if args.restart is not None and args.run is None:
        raise _Fail("--restart needs --run COMMAND (it says when to start the application again)")
    if args.lease_ttl is not None and not args.roles and not args.role_groups:
        raise _Fail("--lease-ttl needs at least one --role NAME or --roles RANGE (a lease keeps a role on offer)")
    if args.lease_ttl is not None and args.http == "off":
        raise _Fail("--lease-ttl needs the HTTP API (the application renews through it): not --http off")


class _Fail(Exception):
    """One line for stderr and the exit status: the daemon does not start."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# Our parent when the process started, before anything slow: --exit-with-parent compares with it
# (a parent that died before chatterd armed PR_SET_PDEATHSIG is seen by the pid change).
PARENT_AT_START = os.getppid()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "keygen":
        return _keygen(argv[1:])
    if argv and (argv[0] in COMMANDS or nodefind.hoist(argv, COMMANDS) is not None):
        from chatterd import ctl  # httpx and the tables: only for the operator commands

        return ctl.main(argv)  # `chatterd members --http A`, or `chatterd --http A members`
    args = parse_daemon_args(argv)  # the command line, over the --config file's options
    from chatterd import logs

    try:
        opts = _options(args)
    except _Fail as e:
        print(f"chatterd: error: {e}", file=sys.stderr)
        return e.status
    opts.argv, opts.launch = list(argv), args  # read again on SIGHUP (chatterd.reload)
    logs.setup(fmt=args.log_format)
    return _run(opts)


def _keygen(rest: list[str]) -> int:
    if rest:
        print("usage: chatterd keygen  (prints a new random key for --encrypt)", file=sys.stderr)
        return 2
    from chatterd.keyfile import generate_key

    print(generate_key())
    return 0


def _config(args: argparse.Namespace) -> Config:
    """The profile, with the knobs given on the command line."""
    fields = dataclasses.fields(Config)
    overrides = {f.name: getattr(args, f.name) for f in fields if getattr(args, f.name, None) is not None}
    return PROFILES[args.profile].replace(**overrides)


def _http_addr(args: argparse.Namespace) -> tuple[str, int] | None:
    if args.http is None:
        return ("127.0.0.1", args.listen[1])
    if args.http == "off":
        return None
    try:
        return wire.parse_addr(args.http)
    except ValueError as e:
        raise _Fail(f"--http: {e}") from None


def _options(args: argparse.Namespace) -> Options:
    """The daemon's options, every one checked: raises _Fail with the line to print."""
    from chatterd import keyfile  # the cryptography package: only for a daemon
    from chatterd.core.balance import group_tags
    from chatterd.core.keys import own_tags
    from chatterd.core.node import check_tags
    from chatterd.core.roles import role_tags
    from chatterd.runtime import Options

    config = _config(args)
    http = _http_addr(args)
    name = args.name or f"{socket.gethostname()}:{args.listen[1]}"
    try:
        ring = keyfile.from_options(args.encrypt, args.keyring_file, args.label)
        keyfile.check_modes(ring, args.encrypt_verify_outgoing, args.encrypt_verify_incoming)
    except ValueError as e:  # KeyringError is a ValueError: bad usage
        raise _Fail(str(e)) from None
    except OSError as e:
        raise _Fail(str(e.strerror or e), 1) from None
    try:
        tags.check_settable(dict(args.tags))
        candidacy = role_tags(dict(args.roles)) | group_tags(dict(args.role_groups))
        given = own_tags(dict(args.tags) | candidacy, ring)  # with the node's chatter:key
        node_tags = check_tags(sealed_config(config, ring), name, given)
    except tags.TagsError as e:
        raise _Fail(f"--tag: {e}") from None
    if http is not None:
        _check_token_file(args.http_token_file)
    _check_app_options(args)
    if args.rejoin and args.data_dir is None:
        raise _Fail("--rejoin needs --data-dir DIR (the peers it rejoins are saved there)")
    return Options(
        listen=args.listen,
        name=name,
        config=config,
        advertise=args.advertise,
        seeds=[s.literal for s in args.join if s.literal is not None],
        discover=[s for s in args.join if s.literal is None],
        retry_interval=args.retry_interval,
        http=http,
        http_token_file=args.http_token_file,
        handlers=args.handlers,
        handler_queue=args.handler_queue,
        handler_timeout=args.handler_timeout,
        tags=node_tags,
        data_dir=args.data_dir,
        roles=dict(args.roles),
        role_groups=dict(args.role_groups),
        expect=args.expect,
        lock=args.lock,
        lock_ttl=args.lock_ttl,
        check=args.check,
        check_interval=args.check_interval,
        check_timeout=args.check_timeout,
        watchdog=args.watchdog,
        run=args.run,
        restart=args.restart or "no",
        lease_ttl=args.lease_ttl,
        parent_pid=PARENT_AT_START if args.exit_with_parent else None,
        keyring=ring,
        keyring_file=args.keyring_file,
        label=args.label,
        encrypt_outgoing=args.encrypt_verify_outgoing,
        encrypt_incoming=args.encrypt_verify_incoming,
        profile=args.profile,
        rejoin=args.rejoin,
        config_file=args.config,
    )


def _run(opts: Options) -> int:
    """Run the daemon until it stops; its exit status."""
    import trio  # imported late: --help and the operator commands stay fast

    from chatterd.loopguard import LoopFailed
    from chatterd.runtime import Runtime, exception_of, os_error_of

    rt = Runtime(opts)
    try:
        trio.run(rt.run)
    except (OSError, LoopFailed, ExceptionGroup) as e:
        failed = exception_of(e, LoopFailed)
        if failed is not None:
            # Logged already (loopguard.py); a supervisor restarts us.
            print(f"chatterd: error: protocol loop failing: {failed}", file=sys.stderr)
            return LOOP_FAILURE_EXIT
        err = os_error_of(e)
        if err is None:
            raise
        print(f"chatterd: error: {err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rt.exit_status  # --run: the application's status when it ended chatterd


if __name__ == "__main__":
    sys.exit(main())
