"""Fixtures of the reliability tests: one emulated local fleet for the whole directory, heal between tests, and the
figures each fault test measured (printed at the end of the run; also written as JSON to
``$TRITONMIX_RELIABILITY_FIGURES`` when that is set)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List

import pytest

from reliability_support import FLEET
from tritonmix import Fleet
from tritonmix.local import LocalFleet

_FIGURES: List[Dict[str, Any]] = []


@pytest.fixture(scope="session")
def local() -> Iterator[LocalFleet]:
    with LocalFleet(Fleet.from_dict(FLEET), ready_timeout_s=120.0) as fleet:
        yield fleet


@pytest.fixture
def healthy(local: LocalFleet) -> LocalFleet:
    """The fleet with every endpoint running at its profile's speed (a test before may have left a fault)."""
    for name, ep in local.endpoints.items():
        if not ep.running:
            local.restart(name)
        elif ep.emulation is not None and ep.emulation.slow_down != 1.0:
            local.slow_down(name, 1.0)
    return local


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Dict[str, Any]:
    """A dict the test fills with what it measured; collected for the summary."""
    row: Dict[str, Any] = {"test": request.node.name}
    _FIGURES.append(row)
    return row


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = [r for r in _FIGURES if len(r) > 1]
    if not rows:
        return
    terminalreporter.section("reliability figures (measured in this run)")
    for row in rows:
        rest = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "test")
        terminalreporter.write_line(f"{row['test']}: {rest}")
    path = os.environ.get("TRITONMIX_RELIABILITY_FIGURES")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=2)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
