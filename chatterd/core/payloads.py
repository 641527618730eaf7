"""Payloads: chatter-rs's externally tagged kinds, validated; anything else is a user message.

    {"DebugMessage": {"text": "hello world"}}
    {"DeviceGossip": {"DeviceAdded": {"origin": UUID, "name": str, "description": str}}}
    {"DeviceGossip": {"DeviceRemoved": {"origin": UUID, "name": str}}}
    {"DeviceGossip": {"DeviceStatus": {"origin": UUID, "name": str, "metrics": {k: {Tag: v}}}}}
    {"ViewGossip": {"ServerAdded": {"uuid": UUID, "addr": "host:port"}}}
    {"ViewGossip": {"ServerRemoved": {"uuid": UUID}}}

Any other JSON object is spread as a user message; its kind is ``user``, and its name is
the single top-level key when there is exactly one (the externally tagged convention).
"""

from __future__ import annotations

import uuid
from typing import Any

from chatterd.core.delegate import PayloadError

KNOWN = ("DebugMessage", "DeviceGossip", "ViewGossip")


__all__ = ["KNOWN", "PayloadError", "kind_of", "user_event_name", "validate"]


def kind_of(payload: dict[str, Any]) -> str:
    """Event kind of a payload: debug, device, view or user."""
    if len(payload) == 1:
        key = next(iter(payload))
        if key == "DebugMessage":
            return "debug"
        if key == "DeviceGossip":
            return "device"
        if key == "ViewGossip":
            return "view"
    return "user"


def user_event_name(payload: dict[str, Any]) -> str:
    if len(payload) == 1:
        return next(iter(payload))
    return "user"


def validate(payload: Any) -> dict[str, Any]:
    """Return the payload if valid; raise PayloadError with a clear reason otherwise."""
    if not isinstance(payload, dict):
        raise PayloadError(f"payload must be a JSON object, got {_json_type(payload)}")
    if not payload:
        raise PayloadError("payload is an empty object")
    known = [k for k in payload if k in KNOWN]
    if known and len(payload) != 1:
        raise PayloadError(f"{known[0]} must be the only key of the payload")
    if not known:
        return payload
    key = known[0]
    body = payload[key]
    if key == "DebugMessage":
        _fields("DebugMessage", body, {"text": str})
    elif key == "DeviceGossip":
        variant, inner = _variant("DeviceGossip", body, ("DeviceAdded", "DeviceRemoved", "DeviceStatus"))
        where = f"DeviceGossip.{variant}"
        if variant == "DeviceAdded":
            _fields(where, inner, {"origin": str, "name": str, "description": str})
        elif variant == "DeviceRemoved":
            _fields(where, inner, {"origin": str, "name": str})
        else:
            _fields(where, inner, {"origin": str, "name": str, "metrics": dict})
            for mname, mval in inner["metrics"].items():
                if not (isinstance(mval, dict) and len(mval) == 1):
                    raise PayloadError(f'{where}.metrics.{mname} must be a one-key object such as {{"Text": "0.3"}}')
        _uuid(where, "origin", inner["origin"])
        if not inner["name"]:
            raise PayloadError(f"{where}.name must not be empty")
    else:
        variant, inner = _variant("ViewGossip", body, ("ServerAdded", "ServerRemoved"))
        where = f"ViewGossip.{variant}"
        if variant == "ServerAdded":
            _fields(where, inner, {"uuid": str, "addr": str})
            from chatterd.core.wire import parse_addr

            try:
                parse_addr(inner["addr"])
            except ValueError as e:
                raise PayloadError(f"{where}.addr: {e}") from None
        else:
            _fields(where, inner, {"uuid": str})
        _uuid(where, "uuid", inner["uuid"])
    return payload


def _variant(where: str, body: Any, allowed: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    if not isinstance(body, dict) or len(body) != 1:
        raise PayloadError(f"{where} must be an object with exactly one of {', '.join(allowed)}")
    variant = next(iter(body))
    if variant not in allowed:
        raise PayloadError(f"{where}: unknown variant {variant!r}; expected one of {', '.join(allowed)}")
    return variant, body[variant]


def _fields(where: str, body: Any, spec: dict[str, type]) -> None:
    if not isinstance(body, dict):
        raise PayloadError(f"{where} must be an object, got {_json_type(body)}")
    for name, typ in spec.items():
        if name not in body:
            raise PayloadError(f"{where} is missing field {name!r}")
        if not isinstance(body[name], typ):
            raise PayloadError(f"{where}.{name} must be {_TYPE_NAMES[typ]}, got {_json_type(body[name])}")
    extra = set(body) - set(spec)
    if extra:
        raise PayloadError(f"{where} has unknown field(s) {', '.join(sorted(extra))}")


def _uuid(where: str, field: str, value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise PayloadError(f"{where}.{field} must be a UUID, got {value!r}") from None


_TYPE_NAMES = {str: "a string", dict: "an object", int: "an integer", list: "an array"}


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__
