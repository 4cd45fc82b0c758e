"""The garbage collector in the long-running processes tritonmix owns (``tritonmix control-plane``,
``tritonmix gateway``): what was loaded at start-up leaves the collector's view, and the youngest generation is
collected less often.

CPython's full (generation 2) collection traverses every container object the process tracks: the modules, the
classes and functions, the fleet and the client libraries loaded at start-up, almost none of which ever becomes
garbage. A controller tick at 1,000 endpoints builds a few thousand NamedTuples (one ``EndpointTick``,
``CapacityObservation`` and ``EndpointView`` per endpoint; a tuple subclass is never untracked) that live one tick,
long enough to be promoted to the oldest generation, so a full collection runs every few ticks; traversing the
start-up heap made each one 18-28 ms of CPU landing in a tick (``benches/results/kubernetes.md``, churn).

    configure_collector()   gc.collect(), then gc.freeze(): every object alive now moves to the permanent
                            generation, which no collection traverses; later collections look only at what was
                            built since (the endpoints that joined, the per-tick values). Then the youngest
                            generation's threshold from 700 to YOUNG_THRESHOLD (the older two unchanged: 10, 10).

Why the threshold: a collection of the youngest generation starts when the tracked objects allocated and not yet
freed since the last one exceed the threshold. A tick frees the last tick's values as it builds its own, so in a
steady plane the count barely moves; at 700 the tick's few thousand new NamedTuples still crossed it several times
per tick (each crossing a collection that promotes the tick's values towards the oldest generation: ~0.8-1.1 ms of
a 1,000-endpoint tick). At 10,000 a collection comes when that many more objects live than before: cyclic garbage
(never freed by reference counting) still adds up to it and is collected then.

Cost: objects frozen here that later become cyclic garbage are never freed (acyclic ones still are, by reference
counting): call it once, after start-up, in a process whose start-up state lives as long as it does.

Only the processes tritonmix owns call it. A Controller, a Router or a client inside a user's process never
changes that process's collector settings: the heap and its collections are the user's.
"""
from __future__ import annotations

import gc

__all__ = ["configure_collector", "YOUNG_THRESHOLD"]

#: the youngest generation's collection threshold in a process of ours (CPython's default: 700)
YOUNG_THRESHOLD = 10_000


def configure_collector() -> int:
    """Collect once, freeze every object alive, raise the youngest generation's threshold (module docstring);
    returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return gc.get_freeze_count()
