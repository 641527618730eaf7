"""The protocol core stays sans-IO: no sockets, clocks, global loggers or imports from the
shells above it (the habit ENGINEERING.md asks for, checked on every module of chatterd/core)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "chatterd" / "core"
FORBIDDEN = {"socket", "time", "datetime", "trio", "asyncio", "structlog", "logging", "os", "threading", "httpx"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_a_core_module_imports_only_the_core_and_pure_libraries(path: Path) -> None:
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{path.name} imports {name}"
        if top == "chatterd":
            assert name.startswith("chatterd.core"), f"{path.name} imports {name} from a shell"


def test_no_core_module_is_over_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CORE.glob("*.py")}
    assert max(sizes.values()) <= 400, sizes
