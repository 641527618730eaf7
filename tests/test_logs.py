"""Log filtering (RUST_LOG-style targets) and rendering, in-process."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from chatterd import logs


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = []


def emit(spec: str) -> list[dict[str, object]]:
    out = io.StringIO()
    logs.setup(spec=spec, fmt="json", stream=out)
    structlog.get_logger("chatterd.membership").debug("m_debug", node="n1")
    structlog.get_logger("chatterd.wire").debug("w_debug")
    structlog.get_logger("chatterd.events").info("e_info", skipped=None)
    structlog.get_logger("chatterd.events").error("e_error")
    logging.getLogger("hypercorn.error").warning("hyper %s", 1)
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_structlog")
@pytest.mark.parametrize(
    ("spec", "events"),
    [
        ("info", ["e_info", "e_error", "hyper 1"]),
        ("warn,chatterd.membership=debug", ["m_debug", "e_error", "hyper 1"]),
        ("chatterd::wire=trace", ["w_debug", "e_info", "e_error", "hyper 1"]),
        ("trace", ["m_debug", "w_debug", "e_info", "e_error", "hyper 1"]),
        ("off", []),
        ("error,chatterd=debug", ["m_debug", "w_debug", "e_info", "e_error"]),
    ],
)
def test_targets_filter_by_longest_prefix(spec: str, events: list[str]) -> None:
    assert [e["event"] for e in emit(spec)] == events


@pytest.mark.usefixtures("restore_structlog")
def test_lines_are_events_with_keys() -> None:
    lines = emit("debug")
    first = lines[0]
    assert first["event"] == "m_debug" and first["node"] == "n1"
    assert first["logger"] == "chatterd.membership" and first["level"] == "debug"
    assert str(first["timestamp"]).endswith("Z")
    assert "skipped" not in lines[2]  # None values are left out


@pytest.mark.usefixtures("restore_structlog")
def test_a_bad_filter_is_reported_and_info_is_used() -> None:
    lines = emit("chatterd=loud")
    assert lines[0]["event"] == "bad_log_filter" and "unknown log level" in str(lines[0]["error"])
    assert [e["event"] for e in lines[1:]] == ["e_info", "e_error", "hyper 1"]
