"""Tags: small key/value metadata a node attaches to itself, gossiped with its membership.

A node's tags travel in its Alive/Join messages and in push-pull member records. They change
only together with a higher incarnation (the node bumps its own and broadcasts Alive with the
new tags), so the usual precedence rules order tag changes too.

Every node must accept what every other node sends, so the size limit is a protocol constant,
not a tunable: the tags, encoded as a JSON object, take at most ``MAX_TAGS_BYTES`` (Serf's
limit on a member's meta data is the same 512 bytes). That leaves an Alive message with tags
well inside a 1400-byte datagram.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

MAX_TAGS_BYTES = 512
# Tags under this prefix are the node's own (core/keys.py's chatter:key): no one else sets them.
RESERVED_PREFIX = "chatter:"

Tags = dict[str, str]

_encoder = msgspec.json.Encoder()


class TagsError(ValueError):
    """Tags that cannot be used: bad syntax, a bad key or over the size limit."""


def encoded_size(tags: Mapping[str, str]) -> int:
    """Bytes the tags take on the wire, as a JSON object."""
    return len(_encoder.encode(dict(tags)))


def _key_problem(key: str) -> str | None:
    if not key:
        return "tag keys must not be empty"
    if "=" in key or any(c.isspace() or not c.isprintable() for c in key):
        return f"tag key {key!r} must not contain '=', white space or control characters"
    return None


def problem(tags: Mapping[str, str]) -> str | None:
    """Why these tags are not acceptable, or None."""
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            return "tag keys and values must be strings"
        reason = _key_problem(k)
        if reason is not None:
            return reason
    size = encoded_size(tags)
    if size > MAX_TAGS_BYTES:
        return f"tags take {size} bytes encoded, over the {MAX_TAGS_BYTES}-byte limit"
    return None


def validate(tags: Mapping[str, str]) -> Tags:
    """A copy of the tags, or raise TagsError saying what is wrong."""
    reason = problem(tags)
    if reason is not None:
        raise TagsError(reason)
    return dict(tags)


def parse_pair(text: str) -> tuple[str, str]:
    """'KEY=VALUE' → (key, value); the value may be empty or contain '='. The size limit is
    checked on the tags as a whole (:func:`validate`)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise TagsError(f"invalid tag {text!r}: expected KEY=VALUE")
    reason = _key_problem(key)
    if reason is not None:
        raise TagsError(f"invalid tag {text!r}: {reason}")
    return key, value


def parse_pairs(items: Iterable[str]) -> Tags:
    """Several 'KEY=VALUE' (later ones win), checked against the size limit as a whole."""
    out: Tags = {}
    for item in items:
        k, v = parse_pair(item)
        out[k] = v
    return validate(out)


def check_settable(keys: Iterable[str]) -> None:
    """Raise TagsError if a user may not set or delete one of these tag keys."""
    for key in keys:
        if key.startswith(RESERVED_PREFIX):
            raise TagsError(f"tag key {key!r}: keys starting with {RESERVED_PREFIX!r} are set by the node itself")


def update(tags: Mapping[str, str], set_: Mapping[str, str], delete: Iterable[str]) -> Tags:
    """``tags`` with the keys in ``delete`` removed, then ``set_`` applied; validated."""
    gone = set(delete)
    out = {k: v for k, v in tags.items() if k not in gone}
    out.update(set_)
    return validate(out)
