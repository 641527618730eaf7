"""The shell's side of ``chatterd keys``: start a keyring operation in the core (it asks every
member, core/keys.py) and wait for its end, a KeysResult event, for the API's ``/v1/keys``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from chatterd.core.config import QUERY_TIMEOUT
from chatterd.core.events import KeysResult
from chatterd.core.keyring import KeyringError

if TYPE_CHECKING:
    from chatterd.runtime import Runtime


class KeyOps:
    """Operations waiting for their result, by id."""

    def __init__(self) -> None:
        self._waiting: dict[str, trio.Event] = {}
        self._results: dict[str, KeysResult] = {}

    async def run(
        self, rt: Runtime, op: str, key: str | None, *, force: bool = False, timeout: float = QUERY_TIMEOUT
    ) -> KeysResult:
        """Carry out ``op`` cluster-wide. Raises KeyringError or QueryError (nothing was asked)."""
        node = rt.node
        assert node is not None
        rid = node.keys_request(op, key, trio.current_time(), force=force, timeout=timeout)
        done = self._waiting[rid] = trio.Event()
        rt.kick()  # the loop sends the query now (and records a result the core already has)
        try:
            with trio.move_on_after(2 * timeout + 1.0):  # a removal is two queries; the core ends each
                await done.wait()
        finally:
            del self._waiting[rid]
        result = self._results.pop(rid, None)
        if result is None:
            raise KeyringError(f"keys {op}: no result within {2 * timeout + 1.0:g} s")
        return result

    def resolve(self, result: KeysResult) -> None:
        """A KeysResult came out of the core."""
        done = self._waiting.get(result.id)
        if done is not None:
            self._results[result.id] = result
            done.set()


def result_json(r: KeysResult) -> dict[str, Any]:
    """What the API answers, and ``chatterd keys --json`` prints."""
    out: dict[str, Any] = {
        "op": r.op,
        "members": len(r.asked),
        "answered": len(r.answered),
        "missing": r.missing,
        "errors": r.errors,
        "keys": r.keys,
        "primary": r.primary,
    }
    if r.key is not None:
        out["key"] = r.key
    if r.refused:
        out["refused"] = r.refused
    return out
