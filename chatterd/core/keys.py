"""The keyring operations of ``chatterd keys``, cluster-wide, like Serf's key manager:
``list``, ``install KEY``, ``use KEY``, ``remove KEY``, each put to every member as a query
(core/query.py) and reported with how many members answered and how many hold each key.

Each member tells which key it seals with in a tag, :data:`KEY_TAG` (its primary's key id
in hex, which each of its sealed datagrams shows anyway). The others seal what they send it
with that key while they hold it, so a member that was down during a rotation comes back
with its older key and is understood (serf#579); once it is back, ``install`` and ``use``
reach it too. ``remove`` first lists who uses the key: it refuses while a member still
seals with it, a failed member included (one that has not confirmed a newer key could not
rejoin once the key is gone), unless forced. Removing a node's primary is refused anyway.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from chatterd.core.config import QUERY_TIMEOUT
from chatterd.core.context import Context, Part
from chatterd.core.events import KeysResult
from chatterd.core.keyring import Keyring, KeyringError, encode_key, key_id, parse_key
from chatterd.core.membership import ALIVE, DEAD, SUSPECT
from chatterd.core.query import Queries, QueryError, QueryResult

Addr = tuple[str, int]

KEYS_QUERY = "_keys"
KEY_TAG = "chatter:key"
OPS = ("list", "install", "use", "remove")


def own_tags(tags: Mapping[str, str], keyring: Keyring | None) -> dict[str, str]:
    """A node's tags with its KEY_TAG as its keyring says (none without one), whatever was given."""
    out = {k: v for k, v in tags.items() if k != KEY_TAG}
    if keyring is not None:
        out[KEY_TAG] = keyring.primary_id.hex()
    return out


class Keys(Part):
    def __init__(
        self, ctx: Context, queries: Queries, keyring: Keyring | None, retag: Callable[[float], object]
    ) -> None:
        super().__init__(ctx)
        self.queries = queries
        self.keyring = keyring
        self.retag = retag  # the node re-announces its tags (KEY_TAG follows the primary)
        queries.register(KEYS_QUERY, self.answer, sealed_only=True)

    def member_key(self, dest: Addr) -> bytes | None:
        """The key the member at ``dest`` says it seals with (its tag), or None."""
        name = self.table.name_at(dest)
        m = self.table.members.get(name) if name is not None else None
        text = m.tags.get(KEY_TAG) if m is not None else None
        if not text:
            return None
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None  # a peer's tag: anything may be in it

    # ------------------------------------------------------------------ asking

    def request(
        self, op: str, key: str | None, now: float, *, force: bool = False, timeout: float = QUERY_TIMEOUT
    ) -> str:
        """Start ``op`` on every member; a KeysResult event with this id tells how it went.
        Raises KeyringError (a bad key, no keyring, removing our primary) or QueryError."""
        if op not in OPS:
            raise KeyringError(f"unknown keys operation {op!r}: expected one of {', '.join(OPS)}")
        if self.keyring is None:
            raise KeyringError("encryption is off on this node: start it with --encrypt or --keyring-file")
        payload: dict[str, Any] = {"op": op}
        if op != "list":
            if not key:
                raise KeyringError(f"keys {op} needs a key")
            k = parse_key(key)
            key = payload["key"] = encode_key(k)
            if op == "remove" and k == self.keyring.primary:
                raise KeyringError("refused: this key is this node's primary (in use): keys use another key first")
        if op == "remove":
            # First who uses it, then (if no one does) the removal, under the first query's id.
            first: list[str] = []

            def checked(result: QueryResult, at: float) -> None:
                self._remove_checked(first[0], result, payload, force, timeout, at)

            first.append(self.queries.ask(KEYS_QUERY, {"op": "list"}, now, checked, timeout))
            return first[0]
        box: list[str] = []
        box.append(self.queries.ask(KEYS_QUERY, payload, now, lambda r, at: self._report(box[0], op, key, r), timeout))
        return box[0]

    def _remove_checked(
        self, rid: str, listed: QueryResult, payload: dict[str, Any], force: bool, timeout: float, now: float
    ) -> None:
        key = payload["key"]
        users = self.users(listed, key)
        if users and not force:
            self._report(rid, "remove", key, listed, refused=_refusal(users))
            return
        try:
            self.queries.ask(KEYS_QUERY, payload, now, lambda r, at: self._report(rid, "remove", key, r), timeout)
        except QueryError as e:
            self._report(rid, "remove", key, listed, refused=str(e))

    def users(self, listed: QueryResult, key: str) -> list[tuple[str, str]]:
        """(member, its state) for each member other than us that still seals with ``key``:
        as it answered the listing, else as its tag says (a failed member's last word)."""
        kid = key_id(parse_key(key)).hex()
        me = self.local.name
        found: list[tuple[str, str]] = []
        for name, answer in sorted(listed.answers.items()):
            if name != me and answer.get("primary") == key:
                found.append((name, "alive"))
        for m in sorted(self.table.members.values(), key=lambda m: m.name):
            if m.name == me or m.name in listed.answers or m.state not in (ALIVE, SUSPECT, DEAD):
                continue
            if m.tags.get(KEY_TAG) == kid:
                found.append((m.name, "failed" if m.state == DEAD else str(m.state)))
        return found

    def _report(self, rid: str, op: str, key: str | None, r: QueryResult, refused: str = "") -> None:
        keys: Counter[str] = Counter()
        primary: Counter[str] = Counter()
        for answer in r.answers.values():
            held = answer.get("keys")
            if isinstance(held, list):
                keys.update(k for k in dict.fromkeys(held) if isinstance(k, str))
            if isinstance(answer.get("primary"), str):
                primary[answer["primary"]] += 1
        self.fx.emit(
            KeysResult(
                rid,
                op,
                key,
                asked=list(r.asked),
                answered=sorted(r.answers),
                errors=dict(sorted(r.errors.items())),
                keys=dict(keys.most_common()),
                primary=dict(primary.most_common()),
                refused=refused,
            )
        )

    # ------------------------------------------------------------------ answering

    def answer(self, payload: dict[str, Any], now: float) -> tuple[dict[str, Any], str]:
        """Carry out one operation here; the answer is our keyring after it."""
        ring = self.keyring
        if ring is None:
            return {}, "encryption is off on this node"
        op, text = payload.get("op"), payload.get("key")
        error = ""
        primary = ring.primary
        try:
            if op not in OPS:
                raise KeyringError(f"unknown keys operation {op!r}")
            if op != "list":
                if not isinstance(text, str):
                    raise KeyringError("no key given")
                k = parse_key(text)
                if op == "install":
                    ring.install(k)
                elif op == "use":
                    ring.use(k)
                else:
                    ring.remove(k)
        except KeyringError as e:  # also: changed, but the keyring file could not be written
            error = str(e)
        if ring.primary != primary:
            self.retag(now)
        return {"keys": [encode_key(k) for k in ring.keys], "primary": encode_key(ring.primary)}, error


def _refusal(users: list[tuple[str, str]]) -> str:
    names = ", ".join(f"{n} ({s})" for n, s in users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
    if any(s == "failed" for _, s in users):
        return (
            f"refused: {names} still seal with this key: a failed member that has not confirmed the new key "
            "could not rejoin once it is gone. Start it again (it rejoins with this key), repeat keys install "
            "and keys use with the new key, then remove; or --force"
        )
    return f"refused: {names} still seal with this key: keys use the new key first (or --force)"
