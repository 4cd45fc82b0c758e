"""Rescue of interactive requests in flight on an endpoint that stopped answering (a frozen process, a black-holed
path, a peer gone without FIN or RST): on by default (``controller: {rescue: false}`` turns it off).

Every attempt of an interactive request is bounded by its endpoint's rescue limit::

    L_i = max(rescue_factor x usual_i, usual_i + SLO)      usual_i known (the lane has a success on i)
    L_i = COLD_SLOS x SLO                                  before the first success on i

usual_i is endpoint i's usual latency on this lane (model, interactive): the dispatcher's EWMA latency, followed at
once when it falls and with a time constant of USUAL_TAU_S when it rises (``tritonmix.request.baseline``), so that a
stall does not raise its own limit. Recomputed at most every REFRESH_S, by the request that notices: O(n) then,
O(1) per attempt. An endpoint that still answers, even several times slower than usual, answers far inside L_i (it
is a whole SLO past its usual latency): a plain slow endpoint sends no copies.

    no answer within L_i      the attempt is given up where the transport allows it to be cancelled (gRPC: the
                              call's deadline cancels it; HTTP: its connection is closed, so it holds no pool slot;
                              aio: the awaiting task is cancelled) and counts as STALLED (``retry.Outcome``): the
                              request is sent to another endpoint (its copy), under the failover rules (a retry:
                              one of max_retries; the first copy is not charged to the retry budget, since it
                              replaces the attempt given up)
    the copy stalls too       (no deadline) another copy, to an endpoint not tried yet, while max_retries and the
                              retry budget allow (a machine-wide hiccup can hold the first copy's endpoint silent
                              too, and the request must not fail while an endpoint is left); else the request ends
                              with one InferenceServerException naming each endpoint tried and what happened, and
                              the state of those not tried
    the user's deadline       binds when it is shorter (``deadline_s``; gRPC's ``client_timeout``): that attempt is
                              not a stall, the deadline's own rules apply; a copy sent under a deadline has the
                              deadline's remaining time, not a rescue limit (a fleet-wide slow spell, where every
                              endpoint is late, must not fail requests that had time left)

The attempt given up is the copy's loser by construction: cancelling it at the moment the copy is sent frees its
connection at once and costs no thread or task per request on the fast path (a race with the original would); an
endpoint that answers only after L_i would have lost the race to a copy on an endpoint that answers in its usual
time. The bound: an interactive request on a frozen fleet ends within (1 + max_retries) x L (3 x (usual + SLO),
3.06 s for a 20 ms model under the default 1 s SLO and max_retries 2), whatever the network timeouts; within
2 x L once the retry budget is spent (a storm of stalls: a frozen fleet under load); one with a ``deadline_s``,
within it.

Batch requests have no rescue limit (they may wait: their deadline and the transport's timeouts bound them). The
requests of a pinned sequence do (interactive), but are never moved: a stall ends them with an error that names the
endpoint holding the sequence's state (``tritonmix.request.sequences``). Copies sent are counted per endpoint whose
attempt stalled (``Rescue.copies``, ``EndpointReport.rescued``).
"""
from __future__ import annotations

import math
import threading
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import AttemptStalled
from .baseline import USUAL_TAU_S, UsualLatency

__all__ = ["Rescue", "RescueLimits", "REFRESH_S", "COLD_SLOS", "STALL_TOLERANCE"]

#: how long a lane's limits are reused before they are computed again from its dispatcher's stats
REFRESH_S = 0.05
#: before an endpoint's first success on a lane (no usual latency yet), its attempts get this many SLOs
COLD_SLOS = 3.0
#: an attempt that failed after this share of its rescue limit failed by the limit (timers fire on time or late;
#: the margin covers a clock read a little before the timer was armed)
STALL_TOLERANCE = 0.98

Key = Tuple[str, str]


class _Limits(dict):
    """L_i by endpoint index; an index not computed yet (an endpoint that joined since the last refresh) reads the
    cold limit, so that the fast path's ``limits[i]`` never fails."""

    __slots__ = ("cold_s",)

    def __init__(self, cold_s: float, values: Dict[int, float]) -> None:
        super().__init__(values)
        self.cold_s = cold_s

    def __missing__(self, i: int) -> float:
        return self.cold_s


class RescueLimits:
    """The rescue limit L_i of each endpoint of one interactive lane (module docstring); ``limit_s(i, now)``."""

    __slots__ = ("lane", "slo_s", "factor", "limits", "refresh_at", "_usual", "_lock")

    def __init__(self, lane: Any, slo_s: float, factor: float) -> None:
        self.lane = lane
        self.slo_s = slo_s
        self.factor = factor
        n = len(lane.dispatcher.stats().ewma_latency_s)
        self.limits = _Limits(COLD_SLOS * slo_s, {})
        self.refresh_at = -math.inf
        self._usual = UsualLatency(n, USUAL_TAU_S)
        self._lock = threading.Lock()

    def limit_s(self, i: int, now: float) -> float:
        """L_i at ``now`` (the clock of the lane)."""
        if now >= self.refresh_at:
            self.refresh(now)
        return self.limits[i]

    def refresh(self, now: float) -> None:
        """Recompute every L_i from the dispatcher's EWMA latencies (one thread at a time; the others keep the
        limits they read)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            ewma = self.lane.dispatcher.stats().ewma_latency_s
            if len(ewma) != len(self._usual.values):
                self._usual = UsualLatency(len(ewma), USUAL_TAU_S)
            usual = self._usual.update(now, ewma)
            self.limits = _Limits(COLD_SLOS * self.slo_s, {i: self.rule(u) for i, u in enumerate(usual)})
            self.refresh_at = now + REFRESH_S
        finally:
            self._lock.release()

    def rule(self, usual_s: float) -> float:
        """L for an endpoint whose usual latency is ``usual_s`` (NaN: not known yet)."""
        if not usual_s == usual_s:
            return COLD_SLOS * self.slo_s
        return max(self.factor * usual_s, usual_s + self.slo_s)

    def usual_s(self, i: int) -> float:
        """usual_i as last computed (NaN: not known yet)."""
        values = self._usual.values
        return values[i] if i < len(values) else math.nan


class Rescue:
    """The rescue of one client (module docstring): the limits per interactive lane, created on first use, and the
    copies sent per endpoint. Thread-safe."""

    def __init__(self, lane_of: Callable[[str, str], Any], names: Callable[[], Tuple[str, ...]], slo_s: float,
                 factor: float, enabled: bool = True) -> None:
        self.enabled = enabled
        self.slo_s = slo_s
        self.factor = factor
        self._lane_of = lane_of
        self._names = names
        self._lock = threading.Lock()
        #: (model, "interactive") -> its limits; read on the fast path without the lock
        self.table: Dict[Key, RescueLimits] = {}
        self._copies: Dict[str, int] = {}

    def limits(self, model: str, request_class: str) -> Optional[RescueLimits]:
        """The limits of the lane (model, request_class); None for batch requests or with rescue turned off."""
        if not self.enabled or request_class != "interactive":
            return None
        key = (model, request_class)
        found = self.table.get(key)
        if found is not None:
            return found
        lane = self._lane_of(model, request_class)
        with self._lock:
            found = self.table.get(key)
            if found is None:
                found = self.table[key] = RescueLimits(lane, self.slo_s, self.factor)
        return found

    def stalled(self, limits: RescueLimits, i: int, limit_s: float, cause: BaseException) -> AttemptStalled:
        """The error of an attempt on endpoint i given up at its limit (its transport's own error as the cause)."""
        usual_s = limits.usual_s(i)
        usual = f"usual latency {usual_s:.3f} s" if usual_s == usual_s else "no usual latency yet"
        error = AttemptStalled(f"no answer within {limit_s:.3f} s ({usual}; the attempt was given up)")
        error.__cause__ = cause
        return error

    def count_copy(self, i: int) -> None:
        """A copy was sent because the attempt on endpoint i stalled."""
        name = self._names()[i]
        with self._lock:
            self._copies[name] = self._copies.get(name, 0) + 1

    def copies(self) -> Dict[str, int]:
        """Copies sent so far, per endpoint whose attempt stalled (by name)."""
        with self._lock:
            return dict(self._copies)
