"""Helpers for the local server and fleet tests (tests/test_local_server.py, test_local_fleet.py)."""
from __future__ import annotations

import os
from typing import List


def stubs_of(prefix: str) -> List[int]:
    """Python backend stubs whose shared-memory region (their third argument) carries ``prefix``, read from /proc
    here rather than through the launcher's own search, so that a test of the launcher does not grade itself."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:  # not a process, or gone
            continue
        if len(argv) > 2 and argv[0].endswith(b"triton_python_backend_stub") and argv[2].startswith(prefix.encode()):
            found.append(int(entry))
    return found
