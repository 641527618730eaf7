"""Command-line plumbing of the benchmarks: parsers, progress lines, where the results go."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import trio

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def say(text: str) -> None:
    """A progress line on stderr."""
    print(text, file=sys.stderr, flush=True)


def say_timed(text: str) -> None:
    """A progress line on stderr, with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def new_parser(module: str, description: str) -> argparse.ArgumentParser:
    """A parser for ``python -m benchmarks.<module>``."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=description)


def add_output_args(p: argparse.ArgumentParser, log_dir_help: str) -> None:
    """``--log-dir DIR`` (the nodes' logs) and ``--json PATH`` (the raw figures)."""
    p.add_argument("--log-dir", default=None, help=log_dir_help)
    p.add_argument("--json", default=None, metavar="PATH", help="write the raw figures to PATH")


def add_profile_arg(p: argparse.ArgumentParser, choices: list[str] | None = None) -> None:
    p.add_argument(
        "--profile", choices=choices or ["lan", "local"], default="lan", help="chatterd timing profile (default: lan)"
    )


def ints(text: str) -> list[int]:
    """Comma-separated integers (an argparse ``type``)."""
    return [int(x) for x in text.split(",") if x.strip()]


def names(text: str) -> list[str]:
    """Comma-separated names, blanks left out."""
    return [s.strip() for s in text.split(",") if s.strip()]


def write_json(path: str | Path, data: Any) -> None:
    """The raw figures as indented JSON (anything JSON does not know as its str())."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))


@contextlib.contextmanager
def log_root(log_dir: str | None, prefix: str) -> Iterator[Path]:
    """``log_dir`` (created if need be), or a temporary directory removed on the way out."""
    if log_dir is None:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)
    else:
        path = Path(log_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path


def run_trio(afn: Callable[..., Awaitable[T]], *args: Any, interrupted: str = "interrupted") -> T | None:
    """``trio.run(afn, *args)``; on Ctrl-C, prints ``interrupted`` and returns None (whatever
    started processes has stopped them on the way out)."""
    try:
        return trio.run(afn, *args)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return None


def source_state() -> str:
    """Which chatterd was measured: HEAD, and a fingerprint of uncommitted changes under chatterd/."""
    try:
        head = _git("rev-parse", "--short", "HEAD").decode().strip()
        diff = _git("diff", "HEAD", "--", "chatterd")
        untracked = _git("ls-files", "--others", "--exclude-standard", "chatterd").decode().split()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not diff and not untracked:
        return f"{head} (clean)"
    h = hashlib.sha1(diff)
    for path in sorted(untracked):
        with contextlib.suppress(OSError):
            h.update((REPO / path).read_bytes())
    return f"{head} + uncommitted changes in chatterd/ (fingerprint {h.hexdigest()[:10]})"


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout
