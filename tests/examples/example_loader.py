"""Import a module of an example (examples/<name>/<module>.py) under a name of its own, so two
examples' modules with the same file name do not collide in one pytest run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(example: str, module: str) -> ModuleType:
    key = f"example_{example.replace('-', '_')}_{module}"
    if key in sys.modules:
        return sys.modules[key]
    path = EXAMPLES / example / module
    sys.path.insert(0, str(path.parent))  # the example's own imports (sidecar.py one level up too)
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(key, path.with_suffix(".py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod
