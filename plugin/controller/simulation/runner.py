"""The discrete-event loop: Poisson arrivals per (model, class), the real Router's dispatchers, the servers, and
controller ticks every ``interval_s``, all in simulated time."""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ...dispatch_core import NoEndpointAvailable
from ...request.retry import Outcome
from ...request.router import Router
from .clock import FakeClock
from .server import ServerModel, SimServer, SimSource

__all__ = ["RequestResult", "Simulation"]

Key = Tuple[str, str]
Rate = Union[float, Callable[[float], float]]


@dataclasses.dataclass(frozen=True)
class RequestResult:
    key: Key
    arrived_s: float
    latency_s: float
    endpoint: int                # -1: no endpoint could take it
    ok: bool
    attempts: int


@dataclasses.dataclass
class _Request:
    key: Key
    arrived_s: float
    endpoint: int = -1
    epoch: int = 0
    attempts: int = 0
    tried: Tuple[int, ...] = ()


class Simulation:
    """Owns the event heap. ``controller`` may be None (static weights). Times are absolute clock seconds; ``t0``
    is the clock at build time and ``run(until_s=...)`` / ``at(t, ...)`` take seconds since t0."""

    def __init__(self, router: Router, servers: Sequence[SimServer], clock: FakeClock, controller: Any = None,
                 seed: int = 0, max_retries: int = 2) -> None:
        self.router, self.servers, self.clock, self.controller = router, list(servers), clock, controller
        self.t0 = clock()
        self.results: List[RequestResult] = []
        self.ticks: List[Tuple[float, Any]] = []        # (t, plan) per controller tick
        self._rng = random.Random(seed)
        self._heap: List[Tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._max_retries = max_retries

    @classmethod
    def build(cls, fleet: Any, models: Sequence[ServerModel], *, clock: Optional[FakeClock] = None, seed: int = 0,
              controller: bool = True, **controller_kwargs: Any) -> "Simulation":
        from ..loop import Controller  # noqa: PLC0415 - the harness can also run without a controller

        clock = clock or FakeClock()
        rng = random.Random(seed)
        servers = [SimServer(m, random.Random(rng.random())) for m in models]
        router = Router(fleet, seed=seed, clock=clock)
        ctl = Controller(fleet, router, source=SimSource(servers, clock), clock=clock,
                         **controller_kwargs) if controller else None
        return cls(router, servers, clock, ctl, seed=seed, max_retries=fleet.controller.max_retries)

    # ---- scheduling ------------------------------------------------------------------------------------------
    def at(self, t_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` at t0 + t_s (e.g. kill a server, halve its capacity)."""
        self._push(self.t0 + t_s, "action", action)

    def kill(self, i: int) -> None:
        """Kill server i now: its queued requests fail at once, its running ones at their completion time."""
        for req in self.servers[i].kill():
            self._lost(req, self.clock())

    def revive(self, i: int) -> None:
        self.servers[i].revive()

    def set_concurrency(self, i: int, slots: int) -> None:
        """Give server i ``slots`` slots now (a capacity cut or its return, the server staying up): a cut lets the
        requests being served finish and holds the queue until fewer than ``slots`` run; a raise starts queued
        requests on the new slots at once."""
        server, now = self.servers[i], self.clock()
        for token, done in server.set_concurrency(now, slots):
            self._push(done, "done", token)

    def _push(self, when: float, kind: str, payload: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, payload))

    def run(self, until_s: float, rates: Mapping[Key, Rate]) -> None:
        """Simulate until t0 + until_s with Poisson arrivals at ``rates`` (req/s, or a function of t - t0)."""
        end = self.t0 + until_s
        for key, rate in rates.items():
            self._next_arrival(key, rate, self.clock())
        if self.controller is not None:
            self._push(self.clock(), "tick", None)
        while self._heap and self._heap[0][0] <= end:
            when, _, kind, payload = heapq.heappop(self._heap)
            self.clock.set(max(when, self.clock()))
            getattr(self, "_on_" + kind)(payload)
        self.clock.set(max(end, self.clock()))
        self._heap = [e for e in self._heap if e[2] in ("done", "action")]  # arrivals/ticks restart with run()
        heapq.heapify(self._heap)

    def _next_arrival(self, key: Key, rate: Rate, now: float) -> None:
        lam = rate(now - self.t0) if callable(rate) else rate
        if lam > 0:
            self._push(now + self._rng.expovariate(lam), "arrival", (key, rate))
        else:
            self._push(now + 0.1, "arrival_idle", (key, rate))

    # ---- events ----------------------------------------------------------------------------------------------
    def _on_action(self, action: Callable[[], None]) -> None:
        action()

    def _on_tick(self, _: None) -> None:
        self.ticks.append((self.clock() - self.t0, self.controller.tick()))
        self._push(self.clock() + self.controller.settings.interval_s, "tick", None)

    def _on_arrival_idle(self, payload: Tuple[Key, Rate]) -> None:
        self._next_arrival(payload[0], payload[1], self.clock())

    def _on_arrival(self, payload: Tuple[Key, Rate]) -> None:
        key, rate = payload
        now = self.clock()
        self.router.lane(*key).begin()
        self._dispatch(_Request(key, now), now)
        self._next_arrival(key, rate, now)

    def _dispatch(self, req: _Request, now: float) -> None:
        lane = self.router.lane(*req.key)
        while True:
            try:
                i = lane.pick(req.tried or None)
            except NoEndpointAvailable:
                self._finish(req, now, ok=False)
                return
            req.attempts += 1
            server = self.servers[i]
            if server.alive:
                req.endpoint, req.epoch = i, server.epoch
                done = server.submit(now, req)
                if done is not None:
                    self._push(done, "done", req)
                return
            lane.failed(i, now, Outcome.NOT_SENT)
            req.tried += (i,)
            if req.attempts > self._max_retries:
                self._finish(req, now, ok=False)
                return

    def _on_done(self, req: _Request) -> None:
        now = self.clock()
        i = req.endpoint
        server = self.servers[i]
        if req.epoch != server.epoch:  # the server died while it ran: lost (no retry: it may have run)
            self._lost(req, now)
            return
        self.router.lane(*req.key).succeeded(i, req.arrived_s)
        self._finish(req, now, ok=True)
        started = server.finish(now)
        if started is not None:
            self._push(started[1], "done", started[0])

    def _lost(self, req: _Request, now: float) -> None:
        self.router.lane(*req.key).failed(req.endpoint, req.arrived_s, Outcome.MAYBE_RAN)
        self._finish(req, now, ok=False)

    def _finish(self, req: _Request, now: float, ok: bool) -> None:
        self.results.append(RequestResult(req.key, req.arrived_s - self.t0, now - req.arrived_s, req.endpoint, ok,
                                          req.attempts))

    # ---- reading -----------------------------------------------------------------------------------------------
    def share_by_endpoint(self, since_s: float = 0.0, until_s: float = float("inf")) -> Dict[int, float]:
        chosen = [r.endpoint for r in self.results if since_s <= r.arrived_s < until_s and r.endpoint >= 0]
        return {i: chosen.count(i) / len(chosen) for i in set(chosen)} if chosen else {}

    def in_flight(self) -> int:
        return sum(sum(d.stats().in_flight) for d in self.router.dispatchers().values())
