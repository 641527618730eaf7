"""A compact, incrementally maintained summary of a node's state, for cheap anti-entropy.

Every record (a member, a device) falls in one of ``BUCKETS`` buckets by a stable hash of
its key, and contributes a 32-bit signature of its content. A bucket's hash is the XOR of
its records' signatures, so it is updated in O(1) whenever a record changes and does not
depend on the order changes arrived in. Two nodes with the same state have the same 64
bucket hashes; a push-pull exchange sends those (a few hundred bytes whatever the cluster
size) and then only the records of the buckets that differ.
"""

from __future__ import annotations

import zlib

BUCKETS = 64


def bucket_of(key: str) -> int:
    return zlib.crc32(key.encode()) % BUCKETS


def signature(*fields: object) -> int:
    """A stable 32-bit signature of a record's content (never 0, so 'absent' is distinct)."""
    return zlib.crc32("\0".join(map(str, fields)).encode()) or 1


class Digest:
    __slots__ = ("hashes",)

    def __init__(self) -> None:
        self.hashes = [0] * BUCKETS

    def update(self, bucket: int, old_sig: int, new_sig: int) -> None:
        """A record in ``bucket`` changed from old_sig to new_sig (0 = absent)."""
        self.hashes[bucket] ^= old_sig ^ new_sig

    def differing(self, other: list[int]) -> list[int]:
        return [i for i, (a, b) in enumerate(zip(self.hashes, other, strict=True)) if a != b]
