"""chatter-rs's application messages as a delegate (core/delegate.py).

DebugMessage is only delivered (the shell logs it). DeviceGossip updates the order-insensitive
device table (core/devices.py), whose records ride in push-pull State chunks. ViewGossip
tells the cluster about servers: ServerAdded makes us join an address we do not know,
ServerRemoved marks a suspect or dead member as left. Any other payload is a user message.
"""

from __future__ import annotations

from typing import Any

from chatterd.core import payloads, wire
from chatterd.core.config import Config
from chatterd.core.delegate import Cluster
from chatterd.core.devices import DeviceTable
from chatterd.core.digest import Digest


class ChatterRs:
    def __init__(self, cfg: Config, digest: Digest, cluster: Cluster) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.devices = DeviceTable(digest)

    def validate(self, payload: Any) -> None:
        payloads.validate(payload)

    def kind(self, payload: dict[str, Any]) -> str:
        return payloads.kind_of(payload)

    def deliver(self, rumor: wire.Rumor, kind: str, now: float) -> None:
        if kind == "device":
            self.devices.apply(rumor.payload["DeviceGossip"], (rumor.lt, rumor.id), now)
        elif kind == "view":
            self._on_view(rumor.payload["ViewGossip"], now)

    def _on_view(self, body: dict[str, Any], now: float) -> None:
        variant, inner = next(iter(body.items()))
        if variant == "ServerAdded":
            addr = wire.parse_addr(inner["addr"])
            if not self.cluster.knows_addr(addr):
                self.cluster.join(addr)
        else:
            self.cluster.forget(inner["uuid"], now)

    def state_records(self, buckets: set[int] | None) -> list[bytes]:
        return [wire.encode_message(r) for r in self.devices.records(buckets)]

    def merge_state(self, records: list[wire.DeviceRecord], now: float) -> None:
        for rec in records:
            self.devices.merge(rec, now)

    def expire(self, now: float) -> None:
        self.devices.expire(now, self.cfg.tombstone_ttl)
