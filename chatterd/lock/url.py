"""``--lock etcd://HOST[:PORT]/PREFIX``: where the role locks live."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from chatterd.core.config import ETCD_PORT  # the default port

EXAMPLE = "expected etcd://HOST[:PORT]/PREFIX, e.g. etcd://127.0.0.1:2379/chatter/"


class LockUrlError(ValueError):
    """A ``--lock`` URL we cannot use; the message is one line and shows the expected form."""


@dataclass(frozen=True)
class LockSpec:
    """Where the locks live: etcd at ``host:port``, keys ``prefix + role``."""

    host: str
    port: int
    prefix: str

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def key(self, role: str) -> str:
        return self.prefix + role


def parse_lock_url(text: str) -> LockSpec:
    """'etcd://127.0.0.1:2379/chatter/' → LockSpec('127.0.0.1', 2379, 'chatter/').

    The port defaults to 2379. The prefix is the path without its leading '/', and always ends
    with '/' (added if missing), so role keys read ``chatter/NAME``. Raises :class:`LockUrlError`."""
    raw = text.strip()
    try:
        u = urllib.parse.urlsplit(raw)
        port = u.port
    except ValueError as e:
        raise LockUrlError(f"invalid lock URL {text!r} ({e}): {EXAMPLE}") from None

    def bad(why: str) -> LockUrlError:
        return LockUrlError(f"invalid lock URL {text!r}: {why}; {EXAMPLE}")

    if u.scheme != "etcd":
        raise bad("scheme must be etcd://")
    if not u.hostname:
        raise bad("no host")
    if u.username is not None or u.password is not None:
        raise bad("credentials are not supported")
    if u.query or u.fragment or "?" in raw or "#" in raw:
        raise bad("no query or fragment allowed")
    if port == 0:
        raise bad("port must be 1-65535")
    prefix = u.path.lstrip("/")
    if not prefix:
        raise bad("no key prefix")
    if any(c.isspace() for c in prefix):
        raise bad("the key prefix contains whitespace")
    if not prefix.endswith("/"):
        prefix += "/"
    return LockSpec(host=u.hostname, port=port if port is not None else ETCD_PORT, prefix=prefix)
