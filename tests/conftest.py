"""Shared test fixtures. Every test session checks at the end that no tritonserver it started is left running."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterator, Set

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_REPOSITORY = REPO_ROOT / "model_repository" / "example"


def _parent(pid: int) -> int:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        pid = _parent(pid)
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def tritonserver_pids() -> Set[int]:
    """Pids of tritonserver (and python backend stub) processes started by this test process.

    Servers that other processes on the machine run are not ours to judge.
    """
    me = os.getpid()
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        if exe.endswith("/tritonserver") or exe.endswith("/triton_python_backend_stub"):
            if _descends_from(int(entry.name), me):
                pids.add(int(entry.name))
    return pids


@pytest.fixture(scope="session", autouse=True)
def no_server_left_behind() -> Iterator[None]:
    before = tritonserver_pids()
    yield
    deadline = time.monotonic() + 15
    leftover = tritonserver_pids() - before
    while leftover and time.monotonic() < deadline:
        time.sleep(0.2)
        leftover = tritonserver_pids() - before
    for pid in leftover:  # do not leak them into the next run, but fail the session
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftover, f"tritonserver processes left running after the tests: {sorted(leftover)}"


@pytest.fixture(scope="session")
def example_repository() -> Path:
    return EXAMPLE_REPOSITORY
