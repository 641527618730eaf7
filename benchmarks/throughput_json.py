"""Throughput (c): JSON libraries for our wire use, one core.

Decode + validate + encode the forwarded copy (hop budget - 1) of a 1-rumor datagram, a
6-rumor datagram and a heartbeat: msgspec typed structs (``chatterd.core.wire``, what the
node does), msgspec untyped, orjson (when installed) and stdlib json, the last three followed
by the same checks in Python (known fields only, types, version, nesting depth). Also the
decode step alone. Operations/s, best of 5 x 2000.

    python -m benchmarks.throughput --parts json [--peers 9] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import timeit
from collections.abc import Callable
from typing import Any

import msgspec

from benchmarks._lib.cli import say
from benchmarks._lib.feeds import debug_payload, fake_peers, heartbeat_datagrams, rumor_datagrams
from chatterd.core import wire

_INT = (int,)
DEPTH_SAMPLE = debug_payload(0)
# Field types of the messages in the datagrams compared (what msgspec's typed structs check).
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "hb": {"inc": _INT},
    "rumor": {"id": (str,), "origin": (str,), "ts": _INT, "lt": _INT, "hops": _INT, "payload": (dict,)},
    "alive": {"node": (str,), "id": (str,), "addr": (str,), "inc": _INT},
}


class DictWireError(ValueError):
    pass


def validate_dict(d: Any, max_depth: int = 32) -> dict[str, Any]:
    """The checks msgspec's typed decode and wire._check make, on a plain decoded dict."""
    if not isinstance(d, dict):
        raise DictWireError("not an object")
    for k in d:
        if k not in ("v", "m", "from"):
            raise DictWireError(f"unknown field {k}")
    v = d.get("v")
    if type(v) is not int or v != wire.VERSION:
        raise DictWireError("version")
    sender = d.get("from")
    if sender is not None and type(sender) is not str:
        raise DictWireError("from")
    msgs = d.get("m")
    if type(msgs) is not list or not msgs:
        raise DictWireError("m")
    for msg in msgs:
        _validate_message(msg, max_depth)
    return d


def _validate_message(msg: Any, max_depth: int) -> None:
    if type(msg) is not dict:
        raise DictWireError("message")
    schema = _SCHEMA.get(msg.get("type"))  # type: ignore[arg-type]
    if schema is None:
        raise DictWireError("type")
    if len(msg) != len(schema) + 1:
        raise DictWireError("fields")
    for name, types in schema.items():
        val = msg.get(name)
        if type(val) not in types:
            raise DictWireError(name)
    if msg["type"] == "rumor":
        if msg["hops"] < 0 or msg["lt"] < 0:
            raise DictWireError("negative")
        if wire.depth(msg["payload"]) > max_depth:
            raise DictWireError("too deep")
    elif msg["inc"] < 0:
        raise DictWireError("negative")


def _forward_dict(d: dict[str, Any]) -> dict[str, Any]:
    """The copy a node forwards: its own name, every rumor's hop budget minus one."""
    return {"v": 1, "m": [m | {"hops": m["hops"] - 1} if m["type"] == "rumor" else m for m in d["m"]], "from": "bench"}


def _forward_typed(dg: wire.Datagram) -> bytes:
    enc = [
        wire.encode_message(wire.Rumor(m.id, m.origin, m.ts, m.lt, m.hops - 1, m.payload))
        if isinstance(m, wire.Rumor)
        else wire.encode_message(m)
        for m in dg.m
    ]
    return wire.pack(enc, "bench", 65_507)[0]


def json_variants() -> dict[str, Callable[[bytes], bytes]]:
    variants: dict[str, Callable[[bytes], bytes]] = {
        "msgspec typed (wire.decode, encode_message + pack: what chatterd does)": lambda b: _forward_typed(
            wire.decode(b)
        ),
        "msgspec untyped (decode to dict, checks in Python)": lambda b: msgspec.json.encode(
            _forward_dict(validate_dict(msgspec.json.decode(b)))
        ),
    }
    try:
        import orjson

        variants["orjson (checks in Python)"] = lambda b: orjson.dumps(_forward_dict(validate_dict(orjson.loads(b))))
    except ImportError:
        pass
    variants["stdlib json (checks in Python)"] = lambda b: json.dumps(
        _forward_dict(validate_dict(json.loads(b))), separators=(",", ":"), ensure_ascii=False
    ).encode()
    return variants


def decoders() -> dict[str, Callable[[bytes], Any]]:
    """The decode step alone, for reference."""
    dec: dict[str, Callable[[bytes], Any]] = {
        "msgspec typed (Decoder(wire.Datagram), no further checks)": msgspec.json.Decoder(wire.Datagram).decode,
        "msgspec typed + wire's checks (wire.decode)": wire.decode,
        "wire.depth(payload) of one DebugMessage rumor (inside wire.decode)": lambda b: wire.depth(DEPTH_SAMPLE),
        "msgspec untyped": msgspec.json.decode,
        "stdlib json": json.loads,
    }
    with contextlib.suppress(ImportError):
        import orjson

        dec["orjson"] = orjson.loads
    return dec


def ops_per_s(fn: Callable[[bytes], Any], data: bytes, number: int = 2000) -> float:
    """Operations per second, best of 5 x ``number``."""
    return number / min(timeit.repeat(lambda fn=fn, data=data: fn(data), number=number, repeat=5))  # type: ignore[misc]


def bench_json(args: argparse.Namespace) -> dict[str, Any]:
    peers = fake_peers(args.peers)
    samples = {
        "1 rumor (DebugMessage)": rumor_datagrams(1, 1, peers)[0][0],
        "6 rumors packed": rumor_datagrams(1, 6, peers)[0][0],
        "heartbeat": heartbeat_datagrams(1, peers)[0][0],
    }
    results: dict[str, Any] = {"sizes": {k: len(v) for k, v in samples.items()}, "ops": {}}
    for vname, fn in json_variants().items():
        row: dict[str, float] = {}
        for sname, data in samples.items():
            out = fn(data)
            assert json.loads(out)["m"] == _forward_dict(json.loads(data))["m"], f"{vname} mangled {sname}"
            row[sname] = ops_per_s(fn, data)
        results["ops"][vname] = row
        say(f"json: {vname}")
    results["decode_only"] = {name: {s: ops_per_s(f, d) for s, d in samples.items()} for name, f in decoders().items()}
    return results


def report_json(res: dict[str, Any]) -> list[str]:
    names = list(res["sizes"])
    head = "".join(f"{n + ' (' + str(res['sizes'][n]) + ' B)':>32}" for n in names)
    lines = ["(c) JSON libraries: decode + validate + encode the forwarded copy, operations/s (one core)"]
    lines.append(f"{'library':<72}{head}")
    for vname, row in res["ops"].items():
        lines.append(f"{vname:<72}" + "".join(f"{row[n]:>32,.0f}" for n in names))
    lines.append("  decode alone (no checks, no encode), operations/s:")
    for vname, row in res["decode_only"].items():
        lines.append(f"    {vname:<68}" + "".join(f"{row[n]:>32,.0f}" for n in names))
    return lines
