"""tritonmix.dispatch_core: the weighted, load-aware endpoint dispatcher on every request's hot path.

Two builds with one behaviour: the compiled ``_dispatch_c`` (Cython) and the pure-Python reference twin
``_dispatch_py``. This module chooses once, at import: the compiled build unless it is missing or
``TRITONMIX_NO_EXTENSIONS=1`` is set; ``IMPLEMENTATION`` says which (``"cython"`` or ``"python"``).

    d = Dispatcher(3, seed=7)
    d.set_weights([1.0, 2.0, 0.0])
    i = d.pick()                       # NoEndpointAvailable when nothing is eligible
    d.record(i, 0.012, True)           # exactly once per pick: success, error, timeout or cancellation
    d.pick(exclude=i)                  # a retry that must not go back to endpoint i
    d.remove(1)                        # endpoint 1 left: never picked again; its requests out still record
    d.reuse(1)                         # once none is in flight: slot 1, fresh, for a new endpoint

The pick rule, its cost, the EWMA formulas and the thread-safety argument are in ``Dispatcher``'s docstring.

Around it, the per-request bookkeeping of a client, compiled too (``Lane``; rules in its docstring)::

    lane = Lane(d, tally, requests, clock, slo_s, on_due, on_slow, on_failed)
    t0 = lane.begin()                  # arrival counted, retry budget's request count, due readmission
    i = lane.pick()
    lane.succeeded(i, t0)              # or lane.failed(i, t0, outcome)
"""
from __future__ import annotations

import logging
import os

from ._common import DispatchError, DispatchStats, NoEndpointAvailable, UnmatchedRecord

__all__ = [
    "IMPLEMENTATION",
    "Dispatcher",
    "Lane",
    "EndpointTally",
    "SlidingCount",
    "DispatchError",
    "DispatchStats",
    "NoEndpointAvailable",
    "UnmatchedRecord",
]

_log = logging.getLogger(__name__)

NO_EXTENSIONS = os.environ.get("TRITONMIX_NO_EXTENSIONS", "") not in ("", "0")

if NO_EXTENSIONS:
    from ._dispatch_py import Dispatcher
    from ._lane_py import EndpointTally, Lane, SlidingCount

    IMPLEMENTATION = "python"
else:
    try:
        from ._dispatch_c import Dispatcher, EndpointTally, Lane, SlidingCount
    except ImportError as exc:  # no compiler at install time: the twin, and say so
        _log.debug("compiled dispatch core unavailable (%s); using the Python twin", exc)
        from ._dispatch_py import Dispatcher
        from ._lane_py import EndpointTally, Lane, SlidingCount

        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "cython"
