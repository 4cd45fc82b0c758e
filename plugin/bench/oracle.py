"""What the best possible schedule of a replay would cost: a true floor, an achievable offline reference, and the
controller-style planning oracle of the first edition (kept for continuity).

All three know every arrival and every event in advance. A request costs ``c_i = price_per_s_i x latency_i(t)`` on
the endpoint i that serves it (one request per accelerator slot at a time: the report's busy-time cost model), where
``latency_i(t)`` and ``concurrency_i(t)`` follow the events (``unit_states_at``).

``fluid_floor`` (the floor): a lower bound on the busy-time cost per request of any schedule that serves within the
SLO as many of the trace's requests as the capacity allows. Fluid relaxation on steps of ``dt_s``: the requests that
arrive in step k (the exact arrivals) may start on endpoint i in any step j with ``(j - k) dt + s_i(j) <= SLO``,
while i is up for the whole service; requests are divisible, and an endpoint's capacity is its rate (100% of it:
``C_i(j) x dt`` seconds of service per step) with the burst its C slots allow: the service started on i in any run
of steps [m0, m] is at most ``C_i x ((m - m0 + 1) dt + s_i)`` (a token bucket of ``C_i s_i`` refilled at C_i per
second, the most that C slots can hold from the start of the run to the end of its last service: so every real
schedule meeting the SLO is one of the LP's). A linear program (HiGHS, through scipy) first places as many requests
as possible, then minimises their cost; cost per 1,000 is over the requests it placed. A policy's cost can be below
it only by serving requests late (missing the SLO) on cheap pools; compare it with goodput costs.

``offline_reference`` (the reference): a real schedule of the actual requests, in arrival order, each on the
cheapest endpoint where it can *finish* within the SLO given the requests already placed (exact slots, events
known: it never starts a request that a kill, freeze or reclaim would interrupt), else on the endpoint where it
finishes first. Cost O(requests x endpoints x requests in flight). What a policy knowing the future could achieve
one request at a time; its per-request placement is the target share after a recovery (``analysis``).

``oracle_cost_per_1k`` (first edition): the controller's own plan on the expected rate, cheapest first up to
``utilisation`` of each unit's rate, then up to 100%. Not a floor (it plans on the rate, not the arrivals, and keeps
headroom); reported beside the floor as ``oracle``.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .trace import ArrivalTrace, Event

__all__ = ["UnitState", "oracle_cost_per_1k", "unit_states_at", "fluid_floor", "offline_reference", "outages"]

#: event kinds after which an endpoint serves nothing until it is restarted or thawed
_DOWN = ("kill", "freeze", "reclaim")


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
    """The endpoints' states after every event up to ``t_s`` (a reclaim's ``at_s`` is when its pool vanishes)."""
    states: Dict[str, UnitState] = {u.name: u for u in initial}
    base = {u.name: u for u in initial}
    down: Dict[str, int] = {}
    for event in events:
        if event.at_s > t_s:
            break
        unit = states[event.endpoint]
        if event.kind == "set_capacity":
            if unit.name in down:
                down[unit.name] = int(event.value or 0)
            else:
                states[unit.name] = dataclasses.replace(unit, concurrency=int(event.value or 0))
        elif event.kind == "slow_down":
            states[unit.name] = dataclasses.replace(unit, latency_s=base[unit.name].latency_s * float(event.value or 1))
        elif event.kind in _DOWN:
            if unit.name not in down:
                down[unit.name] = unit.concurrency
            states[unit.name] = dataclasses.replace(unit, concurrency=0)
        elif event.kind in ("restart", "thaw"):
            states[unit.name] = dataclasses.replace(unit, concurrency=down.pop(unit.name, unit.concurrency))
    return [states[u.name] for u in initial]


def outages(names: Sequence[str], events: Sequence[Event], horizon_s: float) -> Dict[str, List[Tuple[float, float]]]:
    """Per endpoint, the intervals [from, to) in which it serves nothing (killed, frozen, reclaimed): a request in
    service at their start fails (kill, reclaim) or stalls (freeze)."""
    out: Dict[str, List[Tuple[float, float]]] = {n: [] for n in names}
    since: Dict[str, float] = {}
    for event in sorted(events, key=lambda e: e.at_s):
        if event.kind in _DOWN and event.endpoint not in since:
            since[event.endpoint] = event.at_s
        elif event.kind in ("restart", "thaw") and event.endpoint in since:
            out[event.endpoint].append((since.pop(event.endpoint), event.at_s))
    for name, start in since.items():
        out[name].append((start, math.inf))
    return out


def _interrupted(spans: Sequence[Tuple[float, float]], start: float, end: float) -> bool:
    """Whether [start, end) touches an outage."""
    return any(a < end and start < b for a, b in spans)


def _fill(states: Sequence[UnitState], demand_rps: float, utilisation: float) -> Tuple[float, float]:
    """(cost per second, unplaced rps) of placing ``demand_rps`` cheapest first: up to ``utilisation`` of every
    endpoint's rate first, then the rest up to 100%."""
    ordered = sorted((s for s in states if s.mu_rps > 0), key=lambda s: s.cost_per_request)
    cost_per_s, left = 0.0, demand_rps
    for low, high in ((0.0, utilisation), (utilisation, 1.0)):
        for state in ordered:
            take = min(left, max(state.mu_rps * (high - low), 0.0))
            cost_per_s += take * state.cost_per_request
            left -= take
    return cost_per_s, max(left, 0.0)


def oracle_cost_per_1k(
    initial: Sequence[UnitState], trace: ArrivalTrace, utilisation: float = 0.8, dt_s: float = 0.05
) -> Mapping[str, float]:
    """The first edition's planning oracle: cost per 1,000 requests over the trace's expected rate, and how much
    demand it could not place (cost per 1,000 over the demand it placed)."""
    if not 0.0 < utilisation <= 1.0:
        raise ValueError(f"utilisation {utilisation} must be in (0, 1]")
    steps = int(trace.duration_s / dt_s)
    total_cost = total_requests = unplaced = 0.0
    for k in range(steps):
        t = (k + 0.5) * dt_s
        demand = trace.rate_at(t)
        cost_per_s, left = _fill(unit_states_at(initial, trace.events, t), demand, utilisation)
        total_cost += cost_per_s * dt_s
        total_requests += demand * dt_s
        unplaced += left * dt_s
    placed = total_requests - unplaced
    per_1k = 1000.0 * total_cost / placed if placed > 0 else math.nan
    return {"cost_per_1k": per_1k, "requests": total_requests, "unplaced_requests": unplaced}


def fluid_floor(initial: Sequence[UnitState], trace: ArrivalTrace, slo_s: float,
                dt_s: float = 0.05) -> Dict[str, Any]:
    """The floor (module docstring): ``{"cost_per_1k", "requests", "placed_requests", "unplaced_requests",
    "dt_s"}``, cost per 1,000 over the requests placed within the SLO."""
    from scipy import sparse
    from scipy.optimize import linprog

    if dt_s <= 0 or slo_s <= 0:
        raise ValueError("fluid_floor: dt_s and slo_s must be > 0")
    names = [u.name for u in initial]
    steps = int(math.ceil(trace.duration_s / dt_s)) + int(math.ceil(slo_s / dt_s)) + 1
    arrivals = np.bincount((np.asarray(trace.arrivals_s) / dt_s).astype(int), minlength=steps)[:steps]
    down = outages(names, trace.events, math.inf)
    states = [unit_states_at(initial, trace.events, (j + 0.5) * dt_s) for j in range(steps)]
    cols: List[Tuple[int, int, int]] = []  # (arrival step k, endpoint i, start step j)
    costs: List[float] = []
    for k in np.nonzero(arrivals)[0]:
        for i in range(len(initial)):
            for j in range(k, steps):
                state = states[j][i]
                if (j - k) * dt_s + state.latency_s > slo_s + 1e-12:
                    break
                if state.concurrency <= 0 or _interrupted(down[names[i]], j * dt_s, j * dt_s + state.latency_s):
                    continue
                cols.append((int(k), i, j))
                costs.append(state.cost_per_request)
    requests = int(arrivals.sum())
    if not cols:
        return {"cost_per_1k": math.nan, "requests": requests, "placed_requests": 0,
                "unplaced_requests": requests, "dt_s": dt_s}
    col_k = np.array([c[0] for c in cols])
    col_i = np.array([c[1] for c in cols])
    col_j = np.array([c[2] for c in cols])
    cost = np.array(costs)
    service = np.array([states[j][i].latency_s for _, i, j in cols])
    n_x, n_units = len(cols), len(initial)
    # variables: x (requests of arrival step k started on i in step j), then the token levels level[i, j]
    level = lambda i, j: n_x + i * steps + j  # noqa: E731 - an index formula
    burst = [max(st[i].concurrency for st in states) * max(st[i].latency_s for st in states)
             for i in range(n_units)]
    k_rows = {int(k): r for r, k in enumerate(np.unique(col_k))}
    rows: List[int] = []
    columns: List[int] = []
    values: List[float] = []
    rhs: List[float] = [float(arrivals[k]) for k in k_rows]
    for c, k in enumerate(col_k):  # placed <= arrivals, per arrival step
        rows.append(k_rows[int(k)])
        columns.append(c)
        values.append(1.0)
    use_row = len(rhs)  # per (i, j): service started <= level  (used - level <= 0)
    rhs += [0.0] * (n_units * steps)
    for c in range(n_x):
        rows.append(use_row + col_i[c] * steps + col_j[c])
        columns.append(c)
        values.append(service[c])
    for i in range(n_units):
        for j in range(steps):
            rows.append(use_row + i * steps + j)
            columns.append(level(i, j))
            values.append(-1.0)
    refill_row = len(rhs)  # per (i, j >= 1): level_j - level_{j-1} + used_{j-1} <= C_i(j) dt
    rhs += [states[j][i].concurrency * dt_s for i in range(n_units) for j in range(1, steps)]
    for i in range(n_units):
        for j in range(1, steps):
            r = refill_row + i * (steps - 1) + (j - 1)
            rows += [r, r]
            columns += [level(i, j), level(i, j - 1)]
            values += [1.0, -1.0]
    for c in range(n_x):
        if col_j[c] + 1 < steps:
            rows.append(refill_row + col_i[c] * (steps - 1) + col_j[c])
            columns.append(c)
            values.append(service[c])
    matrix = sparse.csr_matrix((values, (rows, columns)), shape=(len(rhs), n_x + n_units * steps))
    bounds = [(0, None)] * n_x + [(0, burst[i]) for i in range(n_units) for _ in range(steps)]
    bounds_rhs = np.array(rhs)
    # place as many as possible first (each placed request is worth more than any cost), then the cheapest
    weight = 10.0 * float(cost.max()) * max(requests, 1)
    objective = np.concatenate([cost - weight, np.zeros(n_units * steps)])
    result = linprog(objective, A_ub=matrix, b_ub=bounds_rhs, bounds=bounds, method="highs")
    if result.status != 0:
        raise RuntimeError(f"fluid_floor: the linear program failed: {result.message}")
    placed = float(result.x[:n_x].sum())
    spent = float(cost @ result.x[:n_x])
    return {"cost_per_1k": 1000.0 * spent / placed if placed > 0 else math.nan, "requests": requests,
            "placed_requests": round(placed, 3), "unplaced_requests": round(requests - placed, 3), "dt_s": dt_s}


class _Slots:
    """The requests placed on one endpoint, as sorted (start, end) intervals."""

    def __init__(self) -> None:
        self.starts: List[float] = []
        self.ends: List[float] = []

    def busy_at(self, t: float) -> int:
        return sum(1 for s, e in zip(self.starts, self.ends) if s <= t < e)

    def fits(self, start: float, end: float, capacity_at: Any) -> bool:
        """Whether one more request in [start, end) keeps every moment within the endpoint's slots then."""
        points = [start] + [s for s in self.starts if start < s < end]
        return all(self.busy_at(p) < capacity_at(p) for p in points)

    def add(self, start: float, end: float) -> None:
        at = bisect.bisect(self.starts, start)
        self.starts.insert(at, start)
        self.ends.insert(at, end)

    def forget_before(self, t: float) -> None:
        keep = [(s, e) for s, e in zip(self.starts, self.ends) if e > t]
        self.starts = [s for s, _ in keep]
        self.ends = [e for _, e in keep]


def offline_reference(initial: Sequence[UnitState], trace: ArrivalTrace, slo_s: float,
                      horizon_s: float = 30.0) -> Dict[str, Any]:
    """The reference (module docstring): ``{"cost_per_1k", "goodput_cost_per_1k", "slo_attainment", "requests",
    "unserved", "placement"}``; ``placement`` holds, per request in arrival order, ``[endpoint, start_s, end_s]``
    (``["", None, None]`` for a request no endpoint could serve within ``horizon_s``)."""
    names = [u.name for u in initial]
    down = outages(names, trace.events, math.inf)
    slots = [_Slots() for _ in initial]
    change_times = sorted({0.0} | {e.at_s for e in trace.events})

    def state(i: int, t: float) -> UnitState:
        return unit_states_at(initial, trace.events, t)[i]

    def earliest(i: int, arrival: float) -> Optional[Tuple[float, float]]:
        candidates = sorted({arrival} | {e for e in slots[i].ends if e > arrival}
                            | {t for t in change_times if t > arrival})
        for t in candidates:
            if t > arrival + horizon_s:
                return None
            unit = state(i, t)
            if unit.concurrency <= 0:
                continue
            end = t + unit.latency_s
            if _interrupted(down[names[i]], t, end):
                continue
            if slots[i].fits(t, end, lambda p, i=i: state(i, p).concurrency):
                return t, end
        return None

    placement: List[List[Any]] = []
    spent, within, served = 0.0, 0, 0
    for arrival in trace.arrivals_s:
        options = []
        for i in range(len(initial)):
            slots[i].forget_before(arrival)
            found = earliest(i, arrival)
            if found is not None:
                options.append((found[1] - arrival <= slo_s + 1e-9, i, found))
        meeting = [o for o in options if o[0]]
        if meeting:
            _, i, (start, end) = min(meeting, key=lambda o: (state(o[1], o[2][0]).cost_per_request, o[1]))
        elif options:
            _, i, (start, end) = min(options, key=lambda o: (o[2][1], o[1]))
        else:
            placement.append(["", None, None])
            continue
        slots[i].add(start, end)
        spent += state(i, start).cost_per_request
        served += 1
        within += int(end - arrival <= slo_s + 1e-9)
        placement.append([names[i], round(start, 4), round(end, 4)])
    total = len(trace.arrivals_s)
    return {
        "cost_per_1k": 1000.0 * spent / served if served else math.nan,
        "goodput_cost_per_1k": 1000.0 * spent / within if within else math.nan,
        "slo_attainment": within / total if total else math.nan,
        "requests": total,
        "unserved": total - served,
        "placement": placement,
    }
