"""The offline oracle: knows every capacity and event in advance; the cost floor of the replay.

Per time step of ``dt_s`` it fills the endpoints in order of cost per request ``c_i = price_per_s_i x latency_i(t)``
(the cost model of the report) up to ``utilisation x mu_i(t)``, where ``mu_i(t) = concurrency_i(t) / latency_i(t)``
follows the events (a capacity cut changes the concurrency, a kill zeroes it, a slow-down multiplies the latency).
Demand beyond that is placed, cheapest first, up to full capacity. Cost O(steps x n log n).

Filling to ``utilisation`` (the controller's target, 0.8 by default) rather than 100% is what any policy that must
keep queues short pays; a 100%-full oracle would be a floor nobody could meet within the SLO.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple

from .trace import ArrivalTrace, Event

__all__ = ["UnitState", "oracle_cost_per_1k", "unit_states_at"]


@dataclasses.dataclass(frozen=True)
class UnitState:
    """What the oracle knows of one endpoint at one moment."""

    name: str
    price_per_hour: float
    latency_s: float
    concurrency: int

    @property
    def mu_rps(self) -> float:
        return self.concurrency / self.latency_s if self.concurrency > 0 else 0.0

    @property
    def cost_per_request(self) -> float:
        return self.price_per_hour / 3600.0 * self.latency_s


def unit_states_at(initial: Sequence[UnitState], events: Sequence[Event], t_s: float) -> List[UnitState]:
    """The endpoints' states after every event up to ``t_s``."""
    states: Dict[str, UnitState] = {u.name: u for u in initial}
    base = {u.name: u for u in initial}
    killed: Dict[str, int] = {}
    for event in events:
        if event.at_s > t_s:
            break
        unit = states[event.endpoint]
        if event.kind == "set_capacity":
            states[unit.name] = dataclasses.replace(unit, concurrency=int(event.value or 0))
        elif event.kind == "slow_down":
            states[unit.name] = dataclasses.replace(unit, latency_s=base[unit.name].latency_s * float(event.value or 1))
        elif event.kind == "kill":
            killed[unit.name] = unit.concurrency
            states[unit.name] = dataclasses.replace(unit, concurrency=0)
        elif event.kind == "restart":
            states[unit.name] = dataclasses.replace(unit, concurrency=killed.pop(unit.name, unit.concurrency))
    return [states[u.name] for u in initial]


def _fill(states: Sequence[UnitState], demand_rps: float, utilisation: float) -> Tuple[float, float]:
    """(cost per second, unplaced rps) of placing ``demand_rps`` cheapest first."""
    ordered = sorted((s for s in states if s.mu_rps > 0), key=lambda s: s.cost_per_request)
    cost_per_s, left = 0.0, demand_rps
    for limit in (utilisation, 1.0):
        for state in ordered:
            room = state.mu_rps * (limit - (utilisation if limit == 1.0 else 0.0))
            take = min(left, max(room, 0.0))
            cost_per_s += take * state.cost_per_request
            left -= take
    return cost_per_s, max(left, 0.0)


def oracle_cost_per_1k(
    initial: Sequence[UnitState], trace: ArrivalTrace, utilisation: float = 0.8, dt_s: float = 0.05
) -> Mapping[str, float]:
    """The oracle's cost per 1,000 requests over the trace, and how much demand it could not place."""
    steps = int(trace.duration_s / dt_s)
    total_cost = total_requests = unplaced = 0.0
    for k in range(steps):
        t = (k + 0.5) * dt_s
        demand = trace.rate_at(t)
        cost_per_s, left = _fill(unit_states_at(initial, trace.events, t), demand, utilisation)
        total_cost += cost_per_s * dt_s
        total_requests += demand * dt_s
        unplaced += left * dt_s
    per_1k = 1000.0 * total_cost / total_requests if total_requests else 0.0
    return {"cost_per_1k": per_1k, "requests": total_requests, "unplaced_requests": unplaced}
