"""The garbage collector in the long-running processes tritonmix owns (``tritonmix control-plane``,
``tritonmix gateway``): what was loaded at start-up leaves the collector's view.

CPython's full (generation 2) collection traverses every container object the process tracks: the modules, the
classes and functions, the fleet and the client libraries loaded at start-up, almost none of which ever becomes
garbage. A controller tick at 1,000 endpoints builds a few thousand NamedTuples (one ``EndpointTick``,
``CapacityObservation`` and ``EndpointView`` per endpoint; a tuple subclass is never untracked) that live one tick,
long enough to be promoted to the oldest generation, so a full collection runs every few ticks; traversing the
start-up heap made each one 18-28 ms of CPU landing in a tick (``benches/results/kubernetes.md``, churn).

    freeze_startup_heap()   gc.collect(), then gc.freeze(): every object alive now moves to the permanent
                            generation, which no collection traverses; later collections look only at what was
                            built since (the endpoints that joined, the per-tick values). Thresholds unchanged.

Cost: objects frozen here that later become cyclic garbage are never freed (acyclic ones still are, by reference
counting): call it once, after start-up, in a process whose start-up state lives as long as it does.

Only the processes tritonmix owns call it. A Controller, a Router or a client inside a user's process never
changes that process's collector settings: the heap and its collections are the user's.
"""
from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]


def freeze_startup_heap() -> int:
    """Collect once, then freeze every object alive (module docstring); returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
