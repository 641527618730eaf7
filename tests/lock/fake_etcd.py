"""A fake etcd for the role lock's tests, in trio's time (virtual under ``MockClock``).

It models what :class:`chatterd.lock.RoleLock` relies on, as etcd 3.4 does it (the same
checks run against both in ``etcd_contract.py``):

* One revision counter: every put and every delete adds one, and so does revoking (or the
  expiry of) a lease that had keys; a key's ``create_revision`` is the revision of its put.
* Leases: the granted TTL is at least ``min_ttl`` (etcd rounds short TTLs up); a lease
  expires ``ttl`` after its grant or its last keep-alive, taking its keys with it. A
  keep-alive of an unknown lease answers TTL 0; revoking one, or putting a key on one, fails
  with NotFound (code 5). A put-if-absent that finds the key does not look at the lease.

Faults, for the whole server or for one client (one node's link to etcd):

* ``stop()`` / ``start()``: etcd killed and restarted on its data: calls are refused at once
  while it is down; keys, leases and the revision survive, and at start every lease is
  revived with a full TTL plus ``election_timeout`` (etcd's ``Promote``), keys included.
* ``pause()`` / ``resume()``: SIGSTOP / SIGCONT. Calls hang until their timeout; at resume the
  leases that expired meanwhile go first, then the calls still waiting are carried out and
  answered. A call that timed out is dropped, or with ``pause(carry_out_late=True)`` carried
  out at resume all the same, its answer lost: etcd 3.4 has done both.
* ``client.link = "refused"`` (answers "connection refused" at once) or ``"hang"`` (requests
  never arrive, calls time out); ``client.lose_answers`` (call names carried out whose
  answers never arrive: the caller times out).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import trio

from chatterd.core.config import LOCK_HTTP_TIMEOUT
from chatterd.lock.etcd import GRPC_NOT_FOUND, EtcdError, EtcdUnavailable, KeyValue

MIN_TTL = 2  # s: etcd's smallest lease TTL with its default timing (3/2 election timeout, rounded up)
ELECTION_TIMEOUT = 1.0  # s: etcd's default; a restarted etcd extends every lease by this much
LEASE_NOT_FOUND = "etcdserver: requested lease not found"
T = TypeVar("T")


@dataclass
class Lease:
    id: int
    ttl: int  # as granted
    expires: float  # server time
    renewed: list[float] = field(default_factory=list)  # server times of the grant and each keep-alive


@dataclass
class Call:
    """One call a client made: when, who, what (whether or not it reached the server)."""

    at: float
    client: str
    name: str
    args: tuple[Any, ...]


@dataclass
class Pending:
    """A call that reached a paused etcd: carried out at resume."""

    op: Callable[[], Any]
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: Exception | None = None


class FakeEtcd:
    """The server: keys, leases, revision. ``client(name)`` gives a node its connection."""

    def __init__(
        self,
        *,
        min_ttl: int = MIN_TTL,
        timeout: float = LOCK_HTTP_TIMEOUT,
        election_timeout: float = ELECTION_TIMEOUT,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.min_ttl = min_ttl
        self.timeout = timeout  # each client's HTTP timeout
        self.election_timeout = election_timeout
        self.clock = clock
        self.revision = 1  # a fresh etcd's
        self.kvs: dict[str, KeyValue] = {}
        self.leases: dict[int, Lease] = {}
        self.state: Literal["up", "stopped", "paused"] = "up"
        self.calls: list[Call] = []
        self.expired: list[int] = []  # leases that expired (not revoked), in order
        self._ids = itertools.count(0x694D_7A3B_0000_0001)
        self._pending: list[Pending] = []
        self.carry_out_late = False

    def client(self, name: str = "client") -> FakeEtcdClient:
        return FakeEtcdClient(self, name)

    # --- faults ---

    def stop(self) -> None:
        """Killed: calls are refused; the calls waiting on a paused etcd fail too."""
        self._expire()  # a running etcd expires leases on time
        self.state = "stopped"
        for p in self._pending:
            p.error = EtcdUnavailable("RemoteProtocolError: Server disconnected without sending a response.")
            p.done.set()
        self._pending.clear()

    def start(self) -> None:
        """Restarted on the same data: every lease is revived with its full TTL."""
        assert self.state == "stopped", "start() after stop()"
        self.state = "up"
        now = self.clock()
        for lease in self.leases.values():
            lease.expires = now + lease.ttl + self.election_timeout

    def pause(self, *, carry_out_late: bool = False) -> None:
        assert self.state == "up", "pause() a running etcd"
        self.state = "paused"
        self.carry_out_late = carry_out_late

    def resume(self) -> None:
        """Leases that expired meanwhile go first, then the calls that arrived, in order."""
        assert self.state == "paused", "resume() after pause()"
        self.state = "up"
        pending, self._pending = self._pending, []
        for p in pending:
            try:
                p.result = self._apply(p.op)
            except EtcdError as e:
                p.error = e
            p.done.set()

    # --- what the tests look at (and do behind the nodes' backs, as etcdctl would) ---

    def get(self, key: str) -> KeyValue | None:
        return self._apply(lambda: self.kvs.get(key))

    def lease(self, lease: int) -> Lease | None:
        """The server's lease (None once revoked or expired); at any time, without faults."""
        self._expire()
        return self.leases.get(lease)

    def delete(self, key: str) -> int:
        return self._apply(lambda: self._delete(key))

    def put(self, key: str, value: str, lease: int = 0) -> int:
        """Put ``key`` whether or not it exists; the revision of the put."""
        return self._apply(lambda: self._put(key, value, lease))

    def revoke(self, lease: int) -> bool:
        return self._apply(lambda: self._revoke(lease))

    # --- the server's side of each call (after the leases due have expired) ---

    def _apply(self, op: Callable[[], T]) -> T:
        assert self.state == "up", f"etcd is {self.state}"
        self._expire()
        return op()

    def _expire(self) -> None:
        if self.state != "up":  # a stopped or paused etcd expires nothing
            return
        now = self.clock()
        for lease in sorted(self.leases.values(), key=lambda le: le.expires):
            if lease.expires <= now:
                self._drop_lease(lease.id)
                self.expired.append(lease.id)

    def _drop_lease(self, lease: int) -> None:
        del self.leases[lease]
        keys = [k for k, kv in self.kvs.items() if kv.lease == lease]
        if keys:  # one transaction deletes them all
            self.revision += 1
            for k in keys:
                del self.kvs[k]

    def _check_lease(self, lease: int) -> None:
        if lease != 0 and lease not in self.leases:
            raise EtcdError(GRPC_NOT_FOUND, LEASE_NOT_FOUND)

    def _grant(self, ttl: int) -> tuple[int, int]:
        lease = Lease(next(self._ids), max(ttl, self.min_ttl), 0.0)
        lease.expires = self.clock() + lease.ttl
        lease.renewed.append(self.clock())
        self.leases[lease.id] = lease
        return lease.id, lease.ttl

    def _keepalive(self, lease: int) -> int:
        found = self.leases.get(lease)
        if found is None:
            return 0
        found.expires = self.clock() + found.ttl
        found.renewed.append(self.clock())
        return found.ttl

    def _revoke(self, lease: int) -> bool:
        self._check_lease(lease)
        self._drop_lease(lease)
        return True

    def _put(self, key: str, value: str, lease: int) -> int:
        self._check_lease(lease)
        self.revision += 1
        old = self.kvs.get(key)
        created = old.create_revision if old is not None else self.revision
        self.kvs[key] = KeyValue(key, value, created, lease)
        return self.revision

    def _create(self, key: str, value: str, lease: int) -> tuple[bool, int, KeyValue | None]:
        if key in self.kvs:
            return False, self.revision, self.kvs[key]
        return True, self._put(key, value, lease), None

    def _list_prefix(self, prefix: str) -> list[KeyValue]:
        return [kv for k, kv in sorted(self.kvs.items()) if k.startswith(prefix)]

    def _delete(self, key: str) -> int:
        if key not in self.kvs:
            return 0
        self.revision += 1
        del self.kvs[key]
        return 1

    def _delete_if(self, key: str, value: str, lease: int) -> bool:
        kv = self.kvs.get(key)
        if kv is None or kv.value != value or kv.lease != lease:
            return False
        return self._delete(key) == 1


class FakeEtcdClient:
    """One node's connection: the calls of :class:`chatterd.lock.etcd.LockClient` (and the
    other EtcdClient calls the tests use), each bounded by the server's ``timeout``."""

    def __init__(self, server: FakeEtcd, name: str) -> None:
        self.server = server
        self.name = name
        self.base_url = f"fake-etcd://{name}"
        self.link: Literal["up", "refused", "hang"] = "up"
        self.lose_answers: set[str] = set()

    @property
    def timeout(self) -> float:
        return self.server.timeout

    async def grant(self, ttl: int) -> tuple[int, int]:
        return await self._call("grant", (ttl,), lambda: self.server._grant(ttl))

    async def keepalive(self, lease: int, timeout: float | None = None) -> int:
        return await self._call("keepalive", (lease,), lambda: self.server._keepalive(lease), timeout)

    async def revoke(self, lease: int) -> bool:
        try:
            await self._call("revoke", (lease,), lambda: self.server._revoke(lease))
        except EtcdError as e:
            if e.code == GRPC_NOT_FOUND:
                return False
            raise
        return True

    async def create(self, key: str, value: str, lease: int) -> tuple[bool, int, KeyValue | None]:
        return await self._call("create", (key, value, lease), lambda: self.server._create(key, value, lease))

    async def get(self, key: str) -> KeyValue | None:
        return await self._call("get", (key,), lambda: self.server.kvs.get(key))

    async def list_prefix(self, prefix: str) -> list[KeyValue]:
        return await self._call("list_prefix", (prefix,), lambda: self.server._list_prefix(prefix))

    async def delete(self, key: str) -> int:
        return await self._call("delete", (key,), lambda: self.server._delete(key))

    async def delete_if(self, key: str, value: str, lease: int) -> bool:
        return await self._call("delete_if", (key, value, lease), lambda: self.server._delete_if(key, value, lease))

    async def _call(self, name: str, args: tuple[Any, ...], op: Callable[[], T], timeout: float | None = None) -> T:
        server = self.server
        limit = server.timeout if timeout is None else max(0.0, min(timeout, server.timeout))
        server.calls.append(Call(server.clock(), self.name, name, args))
        await trio.lowlevel.checkpoint()  # a real call always yields
        if self.link == "refused" or server.state == "stopped":
            raise EtcdUnavailable(f"{name}: ConnectError: [Errno 111] Connection refused")
        if self.link == "hang":
            await trio.sleep(limit)
            raise EtcdUnavailable(f"{name}: no answer within {limit:.2g} s")
        if server.state == "paused":
            return await self._wait_resumed(name, op, limit)
        try:
            result = server._apply(op)
        except EtcdError:
            if name not in self.lose_answers:
                raise
        if name in self.lose_answers:
            await trio.sleep(limit)
            raise EtcdUnavailable(f"{name}: no answer within {limit:.2g} s")
        return result

    async def _wait_resumed(self, name: str, op: Callable[[], T], limit: float) -> T:
        pending = Pending(op)
        self.server._pending.append(pending)
        with trio.move_on_after(limit):
            await pending.done.wait()
        if not pending.done.is_set():
            if not self.server.carry_out_late:
                self.server._pending.remove(pending)
            raise EtcdUnavailable(f"{name}: no answer within {limit:.2g} s")
        if pending.error is not None:
            raise pending.error
        return cast(T, pending.result)
