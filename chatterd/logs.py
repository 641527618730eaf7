"""Logging: RUST_LOG-style filters in front of structlog.

The filter comes from CHATTER_LOG, or from RUST_LOG when CHATTER_LOG is unset, so a
chatter-rs user keeps the habit. Syntax: comma-separated directives, each a level
(``debug``) or ``target=level`` (``chatterd.membership=debug``; Rust's ``::`` works too).
Levels: off, error, warn, info, debug, trace. Default: info.

Output: readable console lines on a terminal, JSON lines otherwise or with
``--log-format json``. Every line is an event with keys:
``event="member_failed" node=n3 after_s=2.4``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog

LEVELS = {
    "off": logging.CRITICAL + 10,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": 5,
}


class LogSpecError(ValueError):
    pass


def parse_spec(spec: str) -> tuple[int, dict[str, int]]:
    """'warn,chatterd.membership=debug' → (WARNING, {'chatterd.membership': DEBUG})."""
    default = logging.INFO
    targets: dict[str, int] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        target, sep, level = part.rpartition("=")
        level = level.strip().lower()
        if level not in LEVELS:
            raise LogSpecError(f"unknown log level {level!r} in {spec!r} (use off, error, warn, info, debug or trace)")
        if sep:
            target = target.strip().replace("::", ".")
            if not target:
                raise LogSpecError(f"empty target in {spec!r}")
            targets[target] = LEVELS[level]
        else:
            default = LEVELS[level]
    return default, targets


def spec_from_env(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    return env.get("CHATTER_LOG") or env.get("RUST_LOG") or "info"


def setup(spec: str | None = None, fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib loggers once, at start-up."""
    stream = stream or sys.stderr
    bad = None
    try:
        default, targets = parse_spec(spec if spec is not None else spec_from_env())
    except LogSpecError as e:
        default, targets, bad = logging.INFO, {}, str(e)
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    shared: list[structlog.typing.Processor] = [
        _drop_none,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _exc_info, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(default)
    for name in list(logging.root.manager.loggerDict):
        logging.getLogger(name).setLevel(logging.NOTSET)
    for target, level in targets.items():
        logging.getLogger(target).setLevel(level)
    # Third-party loggers stay quiet unless asked for by name.
    for noisy in ("hypercorn.access", "hypercorn.error", "asyncio"):
        if noisy not in targets:
            logging.getLogger(noisy).setLevel(max(default, logging.WARNING))
    if bad:
        structlog.get_logger("chatterd.logs").warning("bad_log_filter", error=bad)


def _exc_info(logger: object, name: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    return structlog.processors.format_exc_info(logger, name, event)


def _drop_none(logger: object, name: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    return {k: v for k, v in event.items() if v is not None}
