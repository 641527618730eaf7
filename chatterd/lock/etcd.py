"""A small client for etcd's v3 JSON gateway (``/v3/...``) over HTTP with httpx: no gRPC.

Only the calls the role lock needs (:class:`LockClient`), each bounded by ``timeout``
seconds, so a hung etcd never blocks the caller. Failures come in two kinds:
:class:`EtcdUnavailable` (no usable answer: try again later) and :class:`EtcdError` (etcd
answered with an error, e.g. an unknown lease).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import httpx
import trio

from chatterd.core.config import LOCK_HTTP_TIMEOUT  # the default, and its reason

GRPC_NOT_FOUND = 5


class EtcdUnavailable(Exception):
    """No usable answer: connection refused, timeout, broken response, server error."""


class EtcdError(Exception):
    """etcd answered with a gRPC error (``code`` 5 is NotFound, e.g. an unknown lease)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    lease: int


class LockClient(Protocol):
    """The calls :class:`chatterd.lock.RoleLock` makes (:class:`EtcdClient`; a fake in the tests).

    Each returns within a bounded time or fails with :class:`EtcdUnavailable` (no usable
    answer: the call may or may not have been carried out) or :class:`EtcdError` (etcd refused
    it; code ``GRPC_NOT_FOUND`` for an unknown lease). The methods mean what EtcdClient's say."""

    base_url: str  # where etcd is, for the logs

    async def grant(self, ttl: int) -> tuple[int, int]: ...
    async def keepalive(self, lease: int, timeout: float | None = None) -> int: ...
    async def revoke(self, lease: int) -> bool: ...
    async def create(self, key: str, value: str, lease: int) -> tuple[bool, int, KeyValue | None]: ...
    async def list_prefix(self, prefix: str) -> list[KeyValue]: ...
    async def delete_if(self, key: str, value: str, lease: int) -> bool: ...


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _b64_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prefix_end(prefix: str) -> bytes:
    """The range end that selects every key starting with ``prefix`` (etcd's convention)."""
    end = bytearray(prefix.encode())
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"  # all keys
    end[-1] += 1
    return bytes(end)


def _unb64(data: str) -> str:
    return base64.b64decode(data).decode("utf-8", errors="replace")


def _kv(raw: dict[str, Any]) -> KeyValue:
    # int64 fields come back as strings, and fields equal to zero are left out.
    return KeyValue(
        key=_unb64(raw.get("key", "")),
        value=_unb64(raw.get("value", "")),
        create_revision=int(raw.get("create_revision", 0)),
        lease=int(raw.get("lease", 0)),
    )


class EtcdClient:
    """The few calls of etcd's v3 API the lock needs, each bounded by ``timeout`` seconds."""

    def __init__(self, base_url: str, timeout: float = LOCK_HTTP_TIMEOUT) -> None:
        self.base_url = base_url
        self.timeout = timeout
        # trust_env=False: a proxy from the environment must not sit between us and etcd.
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, trust_env=False)

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with trio.move_on_after(self.timeout) as scope:
            scope.shield = True
            await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        limit = self.timeout if timeout is None else max(0.0, min(timeout, self.timeout))
        try:
            with trio.fail_after(limit):
                r = await self._http.post(path, json=body)
                data = r.json()
        except trio.TooSlowError:
            raise EtcdUnavailable(f"{path}: no answer within {limit:.2g} s") from None
        except httpx.HTTPError as e:
            raise EtcdUnavailable(f"{path}: {type(e).__name__}: {str(e) or 'failed'}") from None
        except ValueError:
            raise EtcdUnavailable(f"{path}: HTTP {r.status_code}, not JSON") from None
        if not isinstance(data, dict):
            raise EtcdUnavailable(f"{path}: HTTP {r.status_code}, unexpected answer")
        if "code" in data and r.status_code != 200:
            err = EtcdError(int(data["code"]), str(data.get("message", data.get("error", ""))))
            if r.status_code >= 500:  # no leader, shutting down, ...: unavailable, try again
                raise EtcdUnavailable(f"{path}: {err}")
            raise err
        if r.status_code != 200:
            raise EtcdUnavailable(f"{path}: HTTP {r.status_code}")
        return data

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (ID, granted TTL in seconds; etcd may round a short TTL up)."""
        data = await self._post("/v3/lease/grant", {"TTL": ttl})
        if data.get("error"):
            raise EtcdError(0, str(data["error"]))
        return int(data["ID"]), int(data.get("TTL", 0))

    async def keepalive(self, lease: int, timeout: float | None = None) -> int:
        """Renew ``lease``; its TTL now, 0 if etcd no longer knows it (expired or revoked)."""
        data = await self._post("/v3/lease/keepalive", {"ID": str(lease)}, timeout)
        # A streaming call: the gateway wraps the single response in "result".
        result = data.get("result", data)
        return int(result.get("TTL", 0))

    async def revoke(self, lease: int) -> bool:
        """Revoke ``lease`` (deleting every key attached to it); False if it was already gone."""
        try:
            await self._post("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as e:
            if e.code == GRPC_NOT_FOUND:
                return False
            raise
        return True

    async def create(self, key: str, value: str, lease: int) -> tuple[bool, int, KeyValue | None]:
        """Put ``key`` = ``value`` attached to ``lease`` only if ``key`` does not exist.

        (True, revision of the put = the key's create_revision, None) on success;
        (False, current revision, the existing key if it still exists) otherwise."""
        k = _b64(key)
        data = await self._post(
            "/v3/kv/txn",
            {
                "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": k, "value": _b64(value), "lease": str(lease)}}],
                "failure": [{"request_range": {"key": k}}],
            },
        )
        revision = int(data["header"]["revision"])
        if data.get("succeeded"):
            return True, revision, None
        kvs = data.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
        return False, revision, _kv(kvs[0]) if kvs else None

    async def get(self, key: str) -> KeyValue | None:
        data = await self._post("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    async def list_prefix(self, prefix: str) -> list[KeyValue]:
        """Every key that starts with ``prefix``."""
        data = await self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64_bytes(_prefix_end(prefix))})
        return [_kv(raw) for raw in data.get("kvs", [])]

    async def delete(self, key: str) -> int:
        """Delete ``key`` whoever holds it (as ``etcdctl del`` does); how many keys were deleted."""
        data = await self._post("/v3/kv/deleterange", {"key": _b64(key)})
        return int(data.get("deleted", 0))

    async def delete_if(self, key: str, value: str, lease: int) -> bool:
        """Delete ``key`` only if it still has ``value`` and is attached to ``lease``."""
        k = _b64(key)
        data = await self._post(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": k, "target": "VALUE", "result": "EQUAL", "value": _b64(value)},
                    {"key": k, "target": "LEASE", "result": "EQUAL", "lease": str(lease)},
                ],
                "success": [{"request_delete_range": {"key": k}}],
            },
        )
        return bool(data.get("succeeded"))
