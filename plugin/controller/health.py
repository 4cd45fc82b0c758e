"""Health: readiness from the scrapes, outlier ejection, panic; each change is a decision and, where the endpoint
carried load, a shortfall event for AUTO mode."""
from __future__ import annotations

import math
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from .decisions import Decision, DecisionLog
from .deltas import EndpointTick
from ..request.ejection import EjectionEvent, OutlierDetector, in_panic
from ..request.slots import SlotArrays

__all__ = ["Health"]


class Health(SlotArrays):
    """routable_i = not out_i and (panic or (ready_i and not ejected_i)).

        ready_i     the newest readiness probe (unknown, e.g. a 401 from an authenticating proxy: unchanged).
                    With a live source (``live=True``: the scraper hands each answer over as it lands, ``probe``)
                    readiness comes from there only, and the tick's samples (an older answer) are not read again
        ejected_i   OutlierDetector, fed our per-tick successes, failures and latency, and between ticks the
                    router's request-path failures (``report``): the one holder of ejection state
        panic       healthy / n < panic_threshold (in_panic): every endpoint is routable
        out_i       the endpoint left the set or takes no new requests (terminating, not ready at its source:
                    ``follow``); not counted in n, never routable
    """

    SLOTS = {"ready": True, "_pushed": True, "_ready_at": -math.inf, "out": False}

    def __init__(self, fleet: Any, outliers: OutlierDetector, live: bool = False) -> None:
        self._names = [e.name for e in fleet.endpoints]
        self._pools = [e.pool_name for e in fleet.endpoints]
        self._threshold = fleet.controller.panic_threshold
        self.outliers = outliers
        n = len(self._names)
        self.ready = [True] * n
        self.panic = False
        self._pushed = [True] * n
        #: an endpoint came back this tick (ready again or re-admitted): capacity grew
        self.grew = False
        self._grew_between = False
        self.live = live
        #: start time of the probe whose answer set ready_i (an older answer landing late changes nothing)
        self._ready_at = [float("-inf")] * n
        self.out = [False] * n

    def follow(self, fleet: Any, serving: Sequence[bool], reset: Iterable[int]) -> None:
        """The set changed (``tritonmix.request.slots``): slots up to the fleet's, fresh state for ``reset``, and
        ``out`` from ``serving``. The caller serialises it with ``update``."""
        self._names = [e.name for e in fleet.endpoints]
        self._pools = [e.pool_name for e in fleet.endpoints]
        n = len(self._names)
        self.grow_slots(n)
        self.outliers.grow_slots(n)
        for i in reset:
            self.reset_slot(i)
            self.outliers.reset_slot(i)
        self.out = [not s for s in serving]

    def update(self, now: float, ticks: Sequence[EndpointTick], service_s: Sequence[float],
               log: DecisionLog) -> List[str]:
        """Fold one tick in; returns shortfall events ("down:<name>", "ejected:<name>"). ``service_s``: the
        capacity estimators' service times (server compute time, not our queueing: an endpoint that COST mode
        loads heavily must not look like an outlier)."""
        self.grew, self._grew_between = self._grew_between, False
        events = [] if self.live else self._readiness(now, ticks, log)
        ok = [t.ok for t in ticks]
        failed = [t.failed for t in ticks]
        latency = list(service_s)
        over_slo = [t.over_slo for t in ticks]
        ours_s = [t.latency_s for t in ticks]
        for e in self.outliers.update(now, ok, failed, latency, self._pools, over_slo, ours_s):
            events.extend(self._ejection(now, e, log))
        self._update_panic(now, log)
        return events

    def report(self, now: float, index: int, reason: str, log: DecisionLog) -> List[str]:
        """The router's request-path signal (a connection refused, a run of failures): eject now, through the same
        detector as the ticks; returns the shortfall events. The caller serialises it with ``update``."""
        e = self.outliers.report(now, index, reason)
        if e is None:
            return []
        events = self._ejection(now, e, log)
        self._update_panic(now, log)
        return events

    def probe(self, now: float, index: int, ready: Optional[bool], started_s: float, log: DecisionLog) -> List[str]:
        """One readiness answer as it lands (the scraper's thread; the caller serialises it with ``update``):
        readiness, and the readmission of an ejected endpoint that was down and answers ready again. Returns the
        shortfall events. O(1) unless something changed (then the panic check, O(n))."""
        events: List[str] = []
        changed, grew_at_tick, self.grew = False, self.grew, False
        if ready is not None and started_s >= self._ready_at[index]:
            self._ready_at[index] = started_s
            if ready != self.ready[index]:
                events += self._set_ready(now, index, ready, now - started_s, log)
                changed = True
        e = self.outliers.note_ready(now, index, ready, started_s)
        if e is not None:
            events += self._ejection(now, e, log)
            changed = True
        self._grew_between, self.grew = self._grew_between or self.grew, grew_at_tick
        if changed:
            self._update_panic(now, log)
        return events

    def _ejection(self, now: float, e: EjectionEvent, log: DecisionLog) -> List[str]:
        name = self._names[e.index]
        log.add(Decision(now, e.kind, f"{e.kind} {name}: {e.reason}", endpoint=name, reasons=(e.reason,),
                         figures=e.figures))
        if e.kind == "eject":
            return [f"ejected:{name}"]
        if e.kind == "readmit":
            self.grew = True
        return []

    def _readiness(self, now: float, ticks: Sequence[EndpointTick], log: DecisionLog) -> List[str]:
        events: List[str] = []
        for i, t in enumerate(ticks):
            if t.ready is None or t.ready == self.ready[i]:
                continue
            events += self._set_ready(now, i, t.ready, t.stale_s, log)
        return events

    def _set_ready(self, now: float, i: int, ready: bool, age_s: float, log: DecisionLog) -> List[str]:
        self.ready[i] = ready
        name = self._names[i]
        kind = "up" if ready else "down"
        log.add(Decision(now, kind, f"{name} {'ready again' if ready else 'not ready'}", endpoint=name,
                         figures={"sample_age_s": age_s}))
        if not ready:
            return [f"down:{name}"]
        self.grew = True
        return []

    def _update_panic(self, now: float, log: DecisionLog) -> None:
        healthy = sum(self.healthy())
        total = len(self._names) - sum(self.out)
        panic = in_panic(healthy, total, self._threshold)
        if panic != self.panic:
            self.panic = panic
            kind = "panic" if panic else "panic_over"
            log.add(Decision(now, kind, f"{kind}: {healthy} of {total} endpoints healthy",
                             figures={"healthy": float(healthy), "total": float(total),
                                      "panic_threshold": self._threshold}))

    def healthy(self) -> List[bool]:
        """healthy_i = ready_i and not ejected_i and not out_i. O(n), read several times a tick."""
        return [r and u is None and not o for r, u, o in zip(self.ready, self.outliers.until, self.out)]

    def routable(self) -> List[bool]:
        return [not o for o in self.out] if self.panic else self.healthy()

    def ejected_mask(self) -> List[bool]:
        return [u is not None for u in self.outliers.until[: len(self.ready)]]

    def availability_changes(self) -> List[Tuple[int, bool]]:
        """(index, routable) for each endpoint whose routability changed since the last call."""
        now = self.routable()
        changes = [(i, r) for i, (r, p) in enumerate(zip(now, self._pushed)) if r != p]
        self._pushed = now
        return changes
