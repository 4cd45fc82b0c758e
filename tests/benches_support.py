"""The scripts of benches/ as modules, for their tests (they are scripts, not a package)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benches" / "results"


def bench_script(name: str) -> ModuleType:
    """``benches/<name>.py`` loaded as a module of that name."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benches" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
