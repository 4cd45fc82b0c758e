"""What both builds of the dispatch core share: the exception tree, the stats record and the PRNG constants.

Both ``_dispatch_c`` (Cython) and ``_dispatch_py`` (the reference twin) import from here, so
``except NoEndpointAvailable`` catches the error whichever build is loaded.

Exception tree::

    DispatchError(Exception)
     ├── NoEndpointAvailable(DispatchError, LookupError)   pick(): no available endpoint with weight > 0
     │                                                      that is not excluded
     └── UnmatchedRecord(DispatchError, RuntimeError)       record(i, ...) with no pick of i in flight

Argument errors are the built-in ones: ``ValueError`` (bad weights, a bad latency, a bad ``ewma_alpha``, a resize
that would drop an endpoint with requests in flight) and ``IndexError`` (an endpoint index out of range); their
messages name the offending index.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional, Tuple

__all__ = [
    "DispatchError",
    "NoEndpointAvailable",
    "UnmatchedRecord",
    "DispatchStats",
    "MASK64",
    "SPLITMIX_GAMMA",
    "EXCLUDE_RETRIES",
    "initial_state",
]

MASK64 = 0xFFFFFFFFFFFFFFFF
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
# Draws by weight that pick() tries before it falls back to a linear scan when ``exclude`` rejects the draw.
EXCLUDE_RETRIES = 4


class DispatchError(Exception):
    """Base class of the dispatch core's own errors."""


class NoEndpointAvailable(DispatchError, LookupError):
    """No endpoint is eligible: every one is unavailable, has weight 0, or was excluded."""


class UnmatchedRecord(DispatchError, RuntimeError):
    """``record(i, ...)`` without a pick of ``i`` in flight (the count would go negative)."""


class DispatchStats(NamedTuple):
    """Per-endpoint counters, one tuple per field, indexed by endpoint (columnar: cheap to build and to
    hand to ``numpy.asarray``). ``ewma_latency_s[i]`` is NaN until endpoint ``i`` has a successful record."""

    in_flight: Tuple[int, ...]
    picks: Tuple[int, ...]
    successes: Tuple[int, ...]
    failures: Tuple[int, ...]
    ewma_latency_s: Tuple[float, ...]
    error_rate: Tuple[float, ...]


def initial_state(seed: Optional[int]) -> int:
    """The splitmix64 state for ``seed``; ``None`` draws 64 bits from ``os.urandom`` so that many clients,
    each with its own dispatcher, do not pick in lock step."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    return int(seed) & MASK64
