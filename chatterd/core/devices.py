"""The cluster's device table, as in chatter-rs, made order-insensitive.

A device, identified by (origin, name), is a set of last-writer-wins fields. Every update
carries a version (Lamport time, message id) and a field only moves to a newer version, so
applying the same updates in any order, any number of times, gives the same table: late or
duplicated gossip never rolls a device back. A removal is a tombstone version; the device
exists while its newest add/status is newer than its newest removal.
"""

from __future__ import annotations

from typing import Any

from chatterd.core.wire import DeviceRecord, Version


class DeviceTable:
    def __init__(self) -> None:
        self._devices: dict[tuple[str, str], DeviceRecord] = {}
        self._removed_at: dict[tuple[str, str], float] = {}  # local time a tombstone appeared

    def apply(self, payload: dict[str, Any], version: Version, now: float) -> bool:
        """Apply a validated DeviceGossip body. Returns True if the table changed."""
        variant, body = next(iter(payload.items()))
        key = (body["origin"], body["name"])
        rec = self._devices.get(key) or DeviceRecord(origin=key[0], name=key[1])
        update = DeviceRecord(origin=key[0], name=key[1])
        if variant == "DeviceAdded":
            update.description, update.description_v = body["description"], version
            update.present_v = version
        elif variant == "DeviceStatus":
            update.metrics, update.metrics_v = dict(body["metrics"]), version
            update.present_v = version
        else:
            update.removed_v = version
        return self._merge(key, rec, update, now)

    def merge(self, update: DeviceRecord, now: float) -> bool:
        """Merge a record from anti-entropy. Returns True if the table changed."""
        key = (update.origin, update.name)
        rec = self._devices.get(key) or DeviceRecord(origin=key[0], name=key[1])
        return self._merge(key, rec, update, now)

    def _merge(self, key: tuple[str, str], rec: DeviceRecord, u: DeviceRecord, now: float) -> bool:
        before = _snapshot(rec)
        if u.description_v > rec.description_v:
            rec.description, rec.description_v = u.description, u.description_v
        if u.metrics_v > rec.metrics_v:
            rec.metrics, rec.metrics_v = u.metrics, u.metrics_v
        rec.present_v = max(rec.present_v, u.present_v)
        rec.removed_v = max(rec.removed_v, u.removed_v)
        self._devices[key] = rec
        if rec.removed_v > rec.present_v:
            self._removed_at.setdefault(key, now)
        else:
            self._removed_at.pop(key, None)
        return _snapshot(rec) != before

    def records(self) -> list[DeviceRecord]:
        """Every record, tombstones included (for anti-entropy)."""
        return list(self._devices.values())

    def present(self) -> list[DeviceRecord]:
        return [r for r in self._devices.values() if r.present_v > r.removed_v]

    def expire(self, now: float, ttl: float) -> None:
        for key, t in list(self._removed_at.items()):
            if now - t >= ttl:
                del self._removed_at[key]
                del self._devices[key]


def _snapshot(r: DeviceRecord) -> tuple[Version, Version, Version, Version]:
    return (r.description_v, r.metrics_v, r.present_v, r.removed_v)
