"""Role lock backed by etcd (``chatterd --lock etcd://HOST:PORT/PREFIX``).

A node holds a role only while it holds a lease-backed key in etcd, so at most one node holds
it even when gossip is partitioned; the etcd revision at which the key was created is the
role's epoch (fencing token), and it grows with every new holder.

* One etcd lease per node (TTL ``ttl``), kept alive every ``ttl/3``.
* One key per role: ``PREFIX + role``, value = the node's name, attached to our lease.
  Acquiring is one transaction: "if the key does not exist, put it". A key held by another
  node is retried every LOCK_WAIT_INTERVAL (0.1 s) for two TTLs, then every ``retry_interval``,
  until its holder releases it or its lease expires.
* A role given up (:meth:`RoleLock.unwant`: the election no longer wins it, say it lost its
  ``--expect`` quorum) has its key deleted at once; the lease lives on for the other roles.
* If etcd stops answering, the lease expires on the server ``ttl`` after the last keep-alive
  it processed. That keep-alive was sent no earlier than the last one we saw succeed, so we
  step down ``LOCK_STEP_DOWN_FRACTION * ttl`` after *sending* it, before any other node can take
  the role. Every held role is then reported lost (``on_lost``), and once etcd answers again
  the old lease is revoked (etcd revives leases across a restart), a new one is granted and
  the wanted roles are tried again.

The lock is given its etcd client (a :class:`LockClient`, e.g. :class:`EtcdClient`: every call
is bounded in time, so a hung etcd never blocks the loops) and its clock (``trio.current_time``
by default). It sleeps through trio: under ``trio.testing.MockClock`` in virtual time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import structlog
import trio

# Defaults and their reasons: chatterd/core/config.py.
from chatterd.core.config import (
    LOCK_FAST_WAIT_TTLS,
    LOCK_HTTP_TIMEOUT,
    LOCK_KEEPALIVES_PER_TTL,
    LOCK_RETRY_INTERVAL,
    LOCK_STEP_DOWN_FRACTION,
    LOCK_TTL,
    LOCK_WAIT_INTERVAL,
)
from chatterd.lock.etcd import GRPC_NOT_FOUND, EtcdClient, EtcdError, EtcdUnavailable, KeyValue, LockClient
from chatterd.lock.url import LockSpec

log = structlog.get_logger("chatterd.lock")


def _ignore(role: str, detail: int | str) -> None:
    pass


class RoleLock:
    """One etcd lease per node (TTL ``ttl``, kept alive every ttl/3); one key per role:
    ``prefix + role``, value = the node name. A role is held while our lease-backed key exists.

    The runtime sets ``on_acquired(role, epoch)`` and ``on_lost(role, reason)``, starts
    :meth:`run` in its nursery, and calls :meth:`want` / :meth:`unwant`. Cancelling ``run``
    releases nothing (like a crash: the roles are freed when the lease expires); call
    :meth:`release_all` first for a graceful stop. Callbacks run in the lock's tasks and must
    not block; an exception in one ends :meth:`run`. :meth:`for_spec` builds one on a real etcd.
    """

    def __init__(
        self,
        client: LockClient,
        node: str,
        ttl: float = LOCK_TTL,
        *,
        prefix: str,
        retry_interval: float = LOCK_RETRY_INTERVAL,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if not node:
            raise ValueError("node name must not be empty")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if not prefix:
            raise ValueError("key prefix must not be empty")
        self.node = node
        self.ttl = float(ttl)
        self.prefix = prefix
        self.retry_interval = retry_interval
        self.on_acquired: Callable[[str, int], None] = _ignore
        self.on_lost: Callable[[str, str], None] = _ignore

        self._client = client
        self._clock = clock
        self._owned: EtcdClient | None = None  # closed when run() ends (for_spec)
        self._running = False
        self._wanted: set[str] = set()
        self._held: dict[str, int] = {}  # role → epoch, all attached to self._lease
        self._releases: dict[str, int] = {}  # role → lease: our keys to delete
        self._lease: int | None = None
        self._lease_ttl = self.ttl  # the lease's TTL as we count it: min(asked, granted)
        self._deadline = 0.0  # clock time: step down then unless a keep-alive succeeds first
        self._last_ok_sent = 0.0  # clock time we sent the last keep-alive (or grant) that succeeded
        self._stale: list[int] = []  # our abandoned leases: revoked once etcd answers
        self._outage: str | None = None  # why etcd is unreachable (logged once per outage)
        self._outage_since = 0.0
        self._notes: dict[str, str] = {}  # role → last logged reason it is not ours
        self._waiting_since: float | None = None  # since when a wanted role is not ours
        self._wake = trio.Event()
        self._stopping = False  # release_all() was called: hold nothing any more

    @classmethod
    def for_spec(
        cls,
        spec: LockSpec,
        node: str,
        ttl: float = LOCK_TTL,
        *,
        retry_interval: float = LOCK_RETRY_INTERVAL,
        http_timeout: float = LOCK_HTTP_TIMEOUT,
    ) -> RoleLock:
        """A lock on the etcd at ``spec`` (a new :class:`EtcdClient`, closed when :meth:`run` ends)."""
        client = EtcdClient(spec.base_url, http_timeout)
        lock = cls(client, node, ttl, prefix=spec.prefix, retry_interval=retry_interval)
        lock._owned = client
        return lock

    # --- the runtime's side ---

    def want(self, role: str) -> None:
        """Start trying to acquire ``role`` (returns at once; ``on_acquired`` tells success)."""
        if not role:
            raise ValueError("role name must not be empty")
        if self._stopping:
            return
        self._wanted.add(role)
        self._wake.set()

    def unwant(self, role: str) -> None:
        """Stop trying to acquire ``role``; if held, it is ours no more from now on, and our key
        is deleted in the background (only if it is still ours: our name and our lease)."""
        self._wanted.discard(role)
        self._notes.pop(role, None)
        epoch = self._held.pop(role, None)
        if epoch is not None and self._lease is not None:
            self._releases[role] = self._lease
            log.info("role_lock_released", role=role, epoch=epoch)
            self._wake.set()

    def held(self) -> dict[str, int]:
        """role → epoch, for the roles held now."""
        return dict(self._held)

    @property
    def lease_id(self) -> int | None:
        """Our current etcd lease, if any."""
        return self._lease

    @property
    def lease_deadline(self) -> float | None:
        """The clock time at which we step down unless a keep-alive succeeds first (None
        without a lease). The server keeps our lease, hence our keys, at least until then."""
        return self._deadline if self._lease is not None else None

    async def release_all(self) -> None:
        """Graceful stop: give up every role at once by revoking our lease (best effort, bounded
        in time). Call it while :meth:`run` still runs; want() is ignored from then on."""
        self._stopping = True
        for role in list(self._wanted | self._held.keys()):
            self.unwant(role)
        self._releases.clear()
        lease, self._lease = self._lease, None
        if lease is not None and self._running:
            try:
                await self._client.revoke(lease)
                log.info("lease_revoked", lease=f"{lease:x}")
            except (EtcdUnavailable, EtcdError) as e:
                self._stale.append(lease)
                log.warning("lease_revoke_failed", lease=f"{lease:x}", reason=str(e))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the lease and the wanted roles until cancelled (started at once: etcd may be down)."""
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._lease_loop)
                nursery.start_soon(self._roles_loop)
                task_status.started()
        finally:
            self._running = False
            if self._owned is not None:
                await self._owned.aclose()  # shielded, bounded by its timeout

    async def _sleep_until(self, when: float) -> None:
        """Sleep through trio until our clock reads ``when``."""
        while (left := when - self._clock()) > 0:
            await trio.sleep(left)

    # --- the lease ---

    async def _lease_loop(self) -> None:
        interval = self.ttl / LOCK_KEEPALIVES_PER_TTL
        next_keepalive = 0.0
        while True:
            if self._stopping:
                await trio.sleep_forever()
            if self._lease is None:
                await self._revoke_stale()
                if await self._grant():
                    next_keepalive = self._last_ok_sent + interval
                    self._wake.set()
                else:
                    await trio.sleep(self.retry_interval)
                continue
            await self._sleep_until(min(next_keepalive, self._deadline))
            now = self._clock()
            if now >= self._deadline:
                self._lose_lease(f"etcd unreachable: lease expired ({self._outage or 'no keep-alive succeeded'})")
                continue
            lease = self._lease
            if lease is None or self._stopping:  # released meanwhile (release_all)
                continue
            try:
                ttl = await self._client.keepalive(lease, timeout=self._deadline - now)
            except (EtcdUnavailable, EtcdError) as e:
                self._unreachable(str(e))
                next_keepalive = self._clock() + min(self.retry_interval, interval)
                continue
            if self._lease != lease:  # released meanwhile (release_all)
                continue
            if ttl <= 0:
                self._reachable()
                self._lose_lease("etcd lease expired: etcd no longer knows it")
                continue
            self._reachable()
            self._last_ok_sent = now
            self._deadline = now + LOCK_STEP_DOWN_FRACTION * min(self._lease_ttl, ttl)
            next_keepalive = now + interval

    async def _grant(self) -> bool:
        sent = self._clock()
        try:
            lease, granted = await self._client.grant(max(1, math.ceil(self.ttl)))
        except (EtcdUnavailable, EtcdError) as e:
            self._unreachable(str(e))
            return False
        self._reachable()
        if self._stopping:  # release_all() came while we waited: this lease must not hold anything
            self._stale.append(lease)
            return False
        self._lease = lease
        self._lease_ttl = min(self.ttl, granted) if granted > 0 else self.ttl
        self._last_ok_sent = sent
        self._deadline = sent + LOCK_STEP_DOWN_FRACTION * self._lease_ttl
        log.info("lease_granted", lease=f"{lease:x}", ttl_s=granted, node=self.node)
        return True

    async def _revoke_stale(self) -> None:
        """Revoke the leases we gave up: after a restart etcd revives them, and with them keys
        that would block our own new attempts until they expire again."""
        for lease in list(self._stale):
            try:
                await self._client.revoke(lease)
            except EtcdUnavailable as e:
                self._unreachable(str(e))
                return
            except EtcdError as e:
                log.warning("lease_revoke_failed", lease=f"{lease:x}", reason=str(e))
            self._stale.remove(lease)

    def _lose_lease(self, reason: str) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            self._stale.append(lease)
        # Keys to delete died with the lease (or will when it is revoked).
        self._releases = {r: le for r, le in self._releases.items() if le != lease}
        log.warning("lease_lost", lease=f"{lease:x}" if lease is not None else None, reason=reason)
        self._lose_roles(list(self._held), reason)

    def _lose_roles(self, roles: list[str], reason: str) -> None:
        for role in roles:
            if self._held.pop(role, None) is not None:
                log.warning("role_lock_lost", role=role, reason=reason)
                self.on_lost(role, reason)

    def _unreachable(self, reason: str) -> None:
        if self._outage is None:
            self._outage_since = self._clock()
            log.warning("etcd_unreachable", url=self._client.base_url, reason=reason)
        self._outage = reason

    def _reachable(self) -> None:
        if self._outage is not None:
            outage_s = round(self._clock() - self._outage_since, 2)
            log.info("etcd_reachable", url=self._client.base_url, outage_s=outage_s)
        self._outage = None

    # --- the roles ---

    async def _roles_loop(self) -> None:
        while True:
            await self._roles_round()
            # Quick rounds while a wanted role is not ours yet; else just a check now and then
            # that our keys are still there (and that no late transaction left a stray one).
            pause = self._pause()
            with trio.move_on_after(pause):
                await self._wake.wait()
            self._wake = trio.Event()

    def _pause(self) -> float:
        """Until the next round: quick while a role we won is held elsewhere (for the first
        LOCK_FAST_WAIT_TTLS TTLs, etcd answering), slow otherwise."""
        if not self._wanted - self._held.keys():
            self._waiting_since = None
            return max(self.retry_interval, self.ttl / LOCK_KEEPALIVES_PER_TTL)
        now = self._clock()
        if self._waiting_since is None:
            self._waiting_since = now
        if self._outage is None and now - self._waiting_since < LOCK_FAST_WAIT_TTLS * self.ttl:
            return min(LOCK_WAIT_INTERVAL, self.retry_interval)
        return self.retry_interval

    async def _roles_round(self) -> None:
        """Release, reconcile with what etcd holds under our prefix, then try the free roles.

        Failed calls are skipped: the lease loop notices and logs an unreachable etcd. A call
        that timed out may still be carried out by etcd later (say, once a paused etcd
        resumes), so the listing, not our memory of answers, says which keys are ours."""
        await self._send_releases()
        lease = self._lease
        if lease is None:
            return
        try:
            kvs = await self._client.list_prefix(self.prefix)
        except (EtcdUnavailable, EtcdError):
            return
        if self._lease != lease:
            return
        others = self._reconcile(kvs, lease)
        for role in sorted(self._wanted - self._held.keys() - self._releases.keys()):
            if self._lease != lease:
                return
            if role in others:
                self._busy(role, others[role], lease)
            else:
                await self._try_acquire(role, lease)

    async def _send_releases(self) -> None:
        """Delete the keys of the roles we gave up (those still ours: our name, that lease)."""
        for role, lease in list(self._releases.items()):
            try:
                await self._client.delete_if(self.prefix + role, self.node, lease)
            except EtcdUnavailable:
                continue
            except EtcdError as e:
                log.warning("role_lock_release_failed", role=role, reason=str(e))
            if self._releases.get(role) == lease:
                del self._releases[role]

    def _reconcile(self, kvs: list[KeyValue], lease: int) -> dict[str, KeyValue]:
        """Match the keys under our prefix with what we hold; returns the others' keys by role."""
        ours: dict[str, KeyValue] = {}
        others: dict[str, KeyValue] = {}
        for kv in kvs:
            role = kv.key[len(self.prefix) :]
            (ours if kv.lease == lease and kv.value == self.node else others)[role] = kv
        for role, epoch in list(self._held.items()):
            mine = ours.get(role)
            if mine is None or mine.create_revision != epoch:  # someone deleted it (etcdctl del ...)
                other = others.get(role)
                why = "deleted from etcd" if other is None else f"replaced in etcd by {other.value!r}"
                self._lose_roles([role], f"our key was {why}")
        for role, kv in ours.items():
            if role in self._held or role in self._releases:
                continue
            if role in self._wanted:  # an attempt whose answer we missed did succeed
                self._acquired(role, kv.create_revision, lease)
            else:  # ... but the role is not wanted any more
                self._releases[role] = lease
                self._wake.set()
        return others

    async def _try_acquire(self, role: str, lease: int) -> None:
        try:
            ok, revision, kv = await self._client.create(self.prefix + role, self.node, lease)
        except EtcdUnavailable:
            return
        except EtcdError as e:
            if e.code == GRPC_NOT_FOUND and self._lease == lease:
                self._lose_lease("etcd lease expired: etcd no longer knows it")
            else:
                self._note(role, f"error: {e}")
            return
        if ok:
            self._acquired(role, revision, lease)
        elif kv is not None and kv.lease == lease and kv.value == self.node:
            self._acquired(role, kv.create_revision, lease)  # an earlier attempt did succeed
        elif kv is not None:
            self._busy(role, kv, lease)
        # else: freed between the compare and the read; try again next round

    def _acquired(self, role: str, epoch: int, lease: int) -> None:
        """Our key for ``role`` exists on ``lease``, created at revision ``epoch``."""
        if self._lease != lease or self._clock() >= self._deadline:
            return  # the lease was lost meanwhile: the key goes with it (revoked as stale)
        if role not in self._wanted:
            self._releases[role] = lease  # unwanted while the transaction was on its way
            self._wake.set()
            return
        if role in self._held:
            return
        self._notes.pop(role, None)
        self._held[role] = epoch
        log.info("role_lock_acquired", role=role, epoch=epoch, node=self.node)
        self.on_acquired(role, epoch)

    def _busy(self, role: str, kv: KeyValue, lease: int) -> None:
        who = "an earlier lease of ours" if kv.value == self.node and kv.lease != lease else repr(kv.value)
        self._note(role, f"held by {who} since revision {kv.create_revision}")

    def _note(self, role: str, why: str) -> None:
        if self._notes.get(role) != why:
            self._notes[role] = why
            log.info("role_lock_waiting", role=role, reason=why, node=self.node)
