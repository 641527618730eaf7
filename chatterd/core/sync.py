"""State sync: joining through seeds, push-pull anti-entropy by digest, and reconnecting.

* Join: a new node sends Join (padded to max_datagram) to its seeds every
  ``join_retry_interval`` until one answers with its state (State chunks). A seed that does
  not know the joiner's address yet answers with at most as many bytes as the Join carried
  (no reflection, see Node.receive): one chunk; push-pull brings the rest soon after.
* Every answer (join, digest, want) is at most MAX_STATE_CHUNKS datagrams.
* Push-pull: every ``pushpull_interval`` a node sends one random live peer its 64 bucket
  hashes (core/digest.py); the peer sends the records of the buckets that differ and asks
  (Want) for ours. Member records, the delegate's records and role claims all take part.
* Reconnect: every ``reconnect_interval`` a node sends its digest to one member it believes
  dead (if it was only cut off, the exchange merges both sides), or, when alone, knocks on
  the seeds again. Long-dead members and old tombstones are reaped on the same timer.
"""

from __future__ import annotations

import msgspec

from chatterd.core import wire
from chatterd.core.config import CHUNK_HEADER_ROOM, MAX_STATE_CHUNKS
from chatterd.core.context import Context, Part
from chatterd.core.delegate import Delegate
from chatterd.core.election import Election
from chatterd.core.gossip import Gossip
from chatterd.core.membership import DEAD
from chatterd.core.state import MemberNews

Addr = tuple[str, int]


class Sync(Part):
    def __init__(
        self,
        ctx: Context,
        news: MemberNews,
        election: Election,
        delegate: Delegate,
        gossip: Gossip,
        *,
        now: float,
        seeds: list[Addr],
        discover: bool = False,
    ) -> None:
        super().__init__(ctx)
        cfg, rng = ctx.cfg, ctx.rng
        self.news = news
        self.election = election
        self.delegate = delegate
        self.gossip = gossip
        news.detector.rtt.revived = self.revived  # a knock answered (_reconnect)
        self.seeds = list(seeds)
        # Seeds from DNS (the shell's discovery) come later, by set_seeds: joined only then.
        self.joined = not self.seeds and not discover
        phase = rng.random()
        self.next_pushpull = now + (0.5 + phase) * cfg.pushpull_interval
        self.next_reconnect = now + (0.5 + phase) * cfg.reconnect_interval
        self.next_join: float | None = now if self.seeds else None

    # ------------------------------------------------------------------ timers

    def deadline(self) -> float:
        d = min(self.next_pushpull, self.next_reconnect)
        return d if self.next_join is None else min(d, self.next_join)

    def tick(self, now: float) -> None:
        if self.next_join is not None and now >= self.next_join:
            self._send_join(now)
        if now >= self.next_pushpull:
            self._pushpull(now)
        if now >= self.next_reconnect:
            self._reconnect(now)

    def set_seeds(self, seeds: list[Addr], now: float) -> None:
        """New seed addresses (DNS changed): knocked on at once while we have not joined, or
        are alone. Names that stand for no one but us start a new cluster, as no seed would."""
        self.seeds = list(seeds)
        others = [s for s in self.seeds if s != self.local.addr]
        if self.joined:
            if others and len(self.ring) <= 1:
                for seed in others:
                    self.fx.send(self.join_datagram(), seed)
        elif others:
            self.next_join = now
        else:
            self.joined = True
            self.next_join = None
            self.election.settle(now)

    def knock(self, addrs: list[Addr]) -> int:
        """``chatterd join``: our Join to each address but ours, as to a seed. A node of another
        cluster answers with its state and the two clusters merge by gossip. Returns how many
        were sent (the seeds do not change: a restart joins through --join as before)."""
        data = self.join_datagram()
        targets = [a for a in addrs if a != self.local.addr]
        for addr in targets:
            self.fx.send(data, addr)
        return len(targets)

    def soon(self, now: float) -> None:
        """Start a push-pull exchange now."""
        self.next_pushpull = now

    def join_datagram(self) -> bytes:
        """Our Join, padded to max_datagram: a seed that does not know our address yet may
        answer with as many bytes as we sent (no reflection), room for one State chunk; the
        rest of its state comes by push-pull once we are a member (on_state)."""
        data = wire.encode([self.local.join_msg()], self.local.name)
        room = self.cfg.max_datagram - len(data) - len(',"pad":""')
        if room <= 0:
            return data
        return wire.encode([msgspec.structs.replace(self.local.join_msg(), pad=" " * room)], self.local.name)

    def _send_join(self, now: float) -> None:
        data = self.join_datagram()
        for seed in self.seeds:
            if seed != self.local.addr:
                self.fx.send(data, seed)
        self.next_join = now + self.cfg.join_retry_interval

    def _pushpull(self, now: float) -> None:
        self.next_pushpull = now + self.cfg.pushpull_interval * (0.75 + 0.5 * self.rng.random())
        peer = self.gossip.random_peer()
        if peer is not None:
            self.fx.send_msg(wire.DigestMsg(h=list(self.digest.hashes)), peer.addr)

    def _reconnect(self, now: float) -> None:
        """Try one dead member: if it was only cut off, the exchange merges both sides."""
        self.next_reconnect = now + self.cfg.reconnect_interval * (0.75 + 0.5 * self.rng.random())
        members = self.table.members
        dead = [m for name in self.news.dead if (m := members.get(name)) is not None and m.state == DEAD]
        if dead:
            # A knock (a round-trip ping, core/rtt.py) costs a member that is really gone 54
            # bytes; one that was only cut off answers, and our digest merges both sides
            # (revived). Without coordinates, the digest at once.
            target = self.rng.choice(dead)
            if not self.news.detector.rtt.knock(target.name, now):
                self.revived(target.addr)
        elif not self.joined or len(self.ring) <= 1:
            for seed in self.seeds:  # alone: keep knocking on the seeds
                if seed != self.local.addr:
                    self.fx.send(self.join_datagram(), seed)
        for name in self.table.reap(now, self.cfg.reap_after):
            self.news.dead.pop(name, None)
            self.fx.stats["reaped"] += 1
            self.fx.log_members.info("member_reaped", node=name, after_s=self.cfg.reap_after)
        self.delegate.expire(now)

    # ------------------------------------------------------------------ messages

    def revived(self, addr: Addr) -> None:
        """A member held dead answered (core/rtt.py knock): our digest merges both sides."""
        self.fx.send_msg(wire.DigestMsg(h=list(self.digest.hashes)), addr)

    def on_join(self, msg: wire.Join, src: Addr, now: float) -> None:
        self.news.on_alive(msg, now, src)
        self.send_state(src, reply=False)

    def on_state(self, msg: wire.State, src: Addr, now: float) -> None:
        if not self.joined:
            self.joined = True
            self.next_join = None
            # The seed's state misses whoever joined after us in a join storm, and gossip can
            # miss one of them too: an early digest exchange closes the gap in ~2 s, not ~5.
            self.next_pushpull = min(self.next_pushpull, now + 1.0 + self.rng.random())
            self.election.settle(now)
            joined_now = True
        else:
            joined_now = False
        for rec in msg.members:
            self.news.on_record(rec, now, src)
        self.delegate.merge_state(msg.devices, now)
        for claim in msg.roles:
            self.election.on_claim(claim, now)
        if msg.reply:
            self.send_state(src, reply=False)
        if joined_now:
            # The seed answered a stranger with one chunk (no reflection): now that we are
            # its member, our digest at once fetches the rest of its state.
            self.fx.send_msg(wire.DigestMsg(h=list(self.digest.hashes)), src)

    def on_digest(self, msg: wire.DigestMsg, src: Addr, now: float) -> None:
        """Push-pull by digest: send the records of the buckets that differ, ask for theirs."""
        differ = self.digest.differing(msg.h)
        if differ:
            self.fx.stats["pushpull_differ"] += 1
            self.send_state(src, reply=False, buckets=set(differ))
            self.fx.send_msg(wire.Want(buckets=differ), src)

    def on_want(self, msg: wire.Want, src: Addr, now: float) -> None:
        self.send_state(src, reply=False, buckets=set(msg.buckets))

    def _member_records(self, buckets: set[int] | None) -> list[bytes]:
        return [
            wire.encode_message(
                wire.MemberRecord(
                    node=m.name, id=m.id, addr=wire.format_addr(m.addr), inc=m.inc, state=m.state, tags=m.tags
                )
            )
            for m in self.table.members.values()
            if buckets is None or m.bucket in buckets
        ]

    def send_state(self, dest: Addr, reply: bool, buckets: set[int] | None = None) -> None:
        """Send our state (all of it, or the records in some buckets) as State chunks."""
        members = self._member_records(buckets)
        devices = self.delegate.state_records(buckets)
        roles = self.election.claim_records(buckets)
        budget = wire.max_message_size(self.cfg.max_datagram) - len(self.local.name) - CHUNK_HEADER_ROOM
        head = wire.encode_message(wire.State(reply=reply))[:-1]  # '{"type":"state"' (+reply)
        # The claims (a few small records) ride in every chunk when they fit in a quarter of
        # it: a node that got any part of our state knows who holds which role.
        roles_part = b',"roles":[' + b",".join(roles) + b"]" if roles else b""
        groups: tuple[tuple[str, list[bytes]], ...]
        if len(roles_part) <= budget // 4:
            head += roles_part
            budget -= len(roles_part)
            groups = (("members", members), ("devices", devices))
        else:
            groups = (("roles", roles), ("members", members), ("devices", devices))
        chunks: list[bytes] = []
        for field, records in groups:
            chunks += _chunks(head, field, records, budget)
        if not chunks:
            chunks.append(head + b"}")
        if len(chunks) > MAX_STATE_CHUNKS:
            # A window at a random place: the records left out now come in a later round.
            self.fx.stats["state_chunks_withheld"] += len(chunks) - MAX_STATE_CHUNKS
            start = self.rng.randrange(len(chunks))
            chunks = (chunks + chunks)[start : start + MAX_STATE_CHUNKS]
        for chunk in chunks:
            self.fx.send(wire.pack([chunk], self.local.name, self.cfg.max_datagram)[0], dest)
        self.fx.stats["pushpull_sent"] += 1


def _chunks(head: bytes, field: str, records: list[bytes], budget: int) -> list[bytes]:
    """``records`` as State chunks of at most ``budget`` bytes of records each."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for rec in records:
        if batch and size + len(rec) + 1 > budget:
            out.append(head + b',"' + field.encode() + b'":[' + b",".join(batch) + b"]}")
            batch, size = [], 0
        batch.append(rec)
        size += len(rec) + 1
    if batch:
        out.append(head + b',"' + field.encode() + b'":[' + b",".join(batch) + b"]}")
    return out
