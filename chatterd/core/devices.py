"""The cluster's device table, as in chatter-rs, made order-insensitive.

A device, identified by (origin, name), is a set of last-writer-wins fields. Every update
carries a version (Lamport time, message id) and a field only moves to a newer version, so
applying the same updates in any order, any number of times, gives the same table: late or
duplicated gossip never rolls a device back. A removal is a tombstone version; the device
exists while its newest add/status is newer than its newest removal.
"""

from __future__ import annotations

from typing import Any

from chatterd.core.digest import Digest, bucket_of, signature
from chatterd.core.wire import DeviceRecord, Version


def device_bucket(origin: str, name: str) -> int:
    return bucket_of(f"{origin}/{name}")


def _sig(r: DeviceRecord) -> int:
    return signature(r.origin, r.name, r.description_v, r.metrics_v, r.present_v, r.removed_v)


class DeviceTable:
    """The device table; ``digest`` (shared with the member table) follows every change."""

    def __init__(self, digest: Digest | None = None) -> None:
        self.digest = digest or Digest()
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
        old_sig = _sig(rec) if key in self._devices else 0
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
        self.digest.update(device_bucket(*key), old_sig, _sig(rec))
        return _snapshot(rec) != before

    def records(self, buckets: set[int] | None = None) -> list[DeviceRecord]:
        """Every record, tombstones included (for anti-entropy), or those in some buckets."""
        if buckets is None:
            return list(self._devices.values())
        return [r for k, r in self._devices.items() if device_bucket(*k) in buckets]

    def present(self) -> list[DeviceRecord]:
        return [r for r in self._devices.values() if r.present_v > r.removed_v]

    def expire(self, now: float, ttl: float) -> None:
        for key, t in list(self._removed_at.items()):
            if now - t >= ttl:
                del self._removed_at[key]
                rec = self._devices.pop(key)
                self.digest.update(device_bucket(*key), _sig(rec), 0)


def _snapshot(r: DeviceRecord) -> tuple[Version, Version, Version, Version]:
    return (r.description_v, r.metrics_v, r.present_v, r.removed_v)
