"""Replacing a file atomically: a temporary file beside it (mode 0600 from its creation, as
``tempfile.mkstemp`` makes it), fsync, rename over the old one, then fsync of the directory
so that the rename itself survives a crash. A reader sees the old file or the new one, never
half of one. Used for the node's state (--data-dir), its keyring file and its API token."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only. Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
