"""Logging: RUST_LOG-style filters in front of structlog.

The filter comes from CHATTER_LOG, or from RUST_LOG when CHATTER_LOG is unset, so a
chatter-rs user keeps the habit. Syntax: comma-separated directives, each a level
(``debug``) or ``target=level`` (``chatterd.membership=debug``; Rust's ``::`` works too).
Levels: off, error, warn, info, debug, trace. Default: info.

Output: readable console lines on a terminal, JSON lines otherwise or with
``--log-format json``. Every line is an event with keys:
``event="member_failed" node=n3 after_s=2.4``.

A shell that would log per datagram asks :func:`enabled` once, at start, and keeps the
answer (chatterd/wirelog.py): at the default level such a line costs nothing, not even the
building of its keys. Trace lines go out through :func:`trace` (structlog has no trace
method of its own).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import msgspec
import structlog

from chatterd import logtap

LEVELS = {
    "off": logging.CRITICAL + 10,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": 5,
}
TRACE = LEVELS["trace"]


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


class _LineWriter:
    """structlog's output end for our own loggers: one rendered line per event, written and
    flushed. Carries the logger's name, which the level filter and the renderer read."""

    __slots__ = ("_fd", "_stream", "name")

    def __init__(self, name: str, stream: TextIO) -> None:
        self.name = name
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()  # one write(2) per line, no buffering layers
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def msg(self, message: str | bytes) -> None:
        data = message if isinstance(message, bytes) else message.encode()
        if self._fd is not None:
            self._stream.flush()  # whatever the stdlib path buffered goes first
            os.write(self._fd, data + b"\n")
        else:
            self._stream.write(data.decode() + "\n")
            self._stream.flush()

    log = trace = debug = info = warn = warning = error = critical = exception = fatal = msg


class _TargetFilter:
    """RUST_LOG-style filtering by logger name: the longest matching target's level wins."""

    def __init__(self, default: int, targets: dict[str, int]) -> None:
        self.default = default
        self.targets = targets
        self._cache: dict[str, int] = {}

    def level_of(self, name: str) -> int:
        level = self._cache.get(name)
        if level is None:
            level = self.default
            best = -1
            for target, lv in self.targets.items():
                if (name == target or name.startswith(target + ".")) and len(target) > best:
                    level, best = lv, len(target)
            self._cache[name] = level
        return level

    def __call__(self, logger: object, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        name = getattr(logger, "name", "")
        if _METHOD_LEVEL.get(method, logging.INFO) < self.level_of(name):
            raise structlog.DropEvent
        event["logger"] = name
        return event


_METHOD_LEVEL = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

_json = msgspec.json.Encoder(enc_hook=str)

# The filter setup() installed; None before (e.g. a Runtime built in-process by a test).
_active: _TargetFilter | None = None


def enabled(target: str, level: int) -> bool:
    """Whether lines of ``level`` on ``target`` (a logger name) pass the filter set up by
    setup(); False before setup. Meant to be asked once and remembered."""
    f = _active
    return f is not None and level >= f.level_of(target)


def trace(logger: Any, event: str, **kw: Any) -> None:
    """Log ``event`` at trace level on ``logger`` (a bound structlog logger, as made by
    ``structlog.get_logger(name).bind()``): the target filter keeps or drops it as any line.
    Goes through structlog's processors like its own level methods do (``_proxy_to_logger``
    is the documented hook of structlog's BoundLoggerBase for that)."""
    logger._proxy_to_logger("trace", event, **kw)


def _json_line(obj: object, **_: object) -> str:
    return _json.encode(obj).decode()


def _json_bytes(obj: object, **_: object) -> bytes:
    return _json.encode(obj)


def setup(spec: str | None = None, fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib loggers once, at start-up.

    Our own loggers (structlog.get_logger("chatterd....")) go straight from structlog to the
    stream: a bound logger that drops levels below every target at the call (or below what a
    `chatterd monitor` asks for: chatterd.logtap), a filter by
    logger name, and a renderer (msgspec for JSON lines). That costs a few microseconds a
    line, where the stdlib logging bridge cost ~55 us: it matters for chatter-rs's habit of
    logging every DebugMessage at info. Third-party libraries (hypercorn) log through the
    stdlib, rendered the same way."""
    stream = stream or sys.stderr
    bad = None
    try:
        default, targets = parse_spec(spec if spec is not None else spec_from_env())
    except LogSpecError as e:
        default, targets, bad = logging.INFO, {}, str(e)
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor
    native: structlog.typing.Processor  # our loggers' renderer: bytes straight to the writer
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)
        native = structlog.processors.JSONRenderer(serializer=_json_bytes)
    else:
        renderer = native = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    global _active
    _active = _TargetFilter(default, targets)
    logtap.GATE.node = min([default, *targets.values()])  # below it a call returns at once...
    logtap.GATE.update()  # ...unless a monitor wants more (chatterd.logtap)
    structlog.configure(
        processors=[
            logtap.TAP,  # `chatterd monitor`: before the node's own filter
            _active,
            _drop_none,
            structlog.processors.add_log_level,
            stamp,
            _exc_info,
            native,
        ],
        logger_factory=lambda *args: _LineWriter(str(args[0]) if args else "", stream),
        wrapper_class=logtap.GatedBoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _exc_info, renderer],
            foreign_pre_chain=[
                _drop_none,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                stamp,
            ],
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
