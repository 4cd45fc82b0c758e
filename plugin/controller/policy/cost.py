"""COST mode: fill the cheapest endpoints that meet the SLO up to the target utilisation, overflowing to the next."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from ..model import EndpointView

__all__ = ["allocate_cost", "fill_in_order", "spread_by_room", "tiers"]


def fill_in_order(demand_rps: float, order: Sequence[int], room_rps: Sequence[float], assigned: List[float]) -> float:
    """Greedy fill: for i in ``order`` (cheapest first) a_i += min(remaining, room_i); returns what is left.
    O(n). ``assigned`` is updated in place (indexed like ``room_rps``)."""
    remaining = demand_rps
    for i in order:
        if remaining <= 0.0:
            break
        take = min(remaining, room_rps[i])
        if take > 0.0:
            assigned[i] += take
            remaining -= take
    return remaining


def spread_by_room(demand_rps: float, members: Sequence[int], room_rps: Sequence[float], assigned: List[float]) -> float:
    """Proportional spread: a_i += min(room_i, demand * room_i / sum(room)); returns what is left (only when the
    members' total room is below the demand). O(n)."""
    total = sum(room_rps[i] for i in members)
    if total <= 0.0 or demand_rps <= 0.0:
        return demand_rps
    share = min(1.0, demand_rps / total)
    for i in members:
        assigned[i] += share * room_rps[i]
    return max(0.0, demand_rps - total)


def tiers(views: Sequence[EndpointView], order: Sequence[int], members: Sequence[int]) -> List[List[int]]:
    """Group ``members`` into tiers of one pool at one price (the same hardware at the same price costs the same
    per inference, whatever noise the mu estimates carry), tiers ordered by their best member in ``order``."""
    allowed = set(members)
    groups: Dict[Tuple[str, float], List[int]] = {}
    for i in order:
        if i in allowed:
            groups.setdefault((views[i].pool, views[i].price_per_hour), []).append(i)
    return list(groups.values())


def allocate_cost(views: Sequence[EndpointView], demand_rps: float, order: Sequence[int], eligible: Sequence[int],
                  fallback: Sequence[int], utilisation: float) -> List[float]:
    """Interactive load per endpoint in COST mode.

        1. fill the eligible endpoints (healthy, SLO met, filters passed) tier by tier (``tiers``: best score
           first, i.e. the lowest c_i with the default ``cost`` scorer) up to min(utilisation, u_slo_i) x mu_i -
           external_i (``EndpointView.safe_room_rps``: u_slo_i keeps the queue wait within the SLO's slack);
           within a tier the load is spread in proportion to that room (equal cost, lower queueing);
        2. overflow: spread what is left over the eligible endpoints' remaining room up to mu_i, in proportion
           to that room (no single endpoint is driven to 100% first);
        3. still left (every eligible endpoint is full): the ``fallback`` endpoints (healthy, SLO not met) by room;
        4. still left: over the eligible endpoints (else the fallback) in proportion to mu_i: they queue.
    O(n) after the ranking.
    """
    n = len(views)
    assigned = [0.0] * n
    target = [v.safe_room_rps(utilisation) for v in views]
    rest = demand_rps
    for tier in tiers(views, order, eligible):
        if rest <= 0.0:
            break
        rest = spread_by_room(rest, tier, target, assigned)
    if rest > 0.0:
        full = [max(0.0, v.room_rps(1.0) - a) for v, a in zip(views, assigned)]
        rest = spread_by_room(rest, eligible, full, assigned)
    if rest > 0.0:
        rest = spread_by_room(rest, fallback, [v.room_rps(1.0) for v in views], assigned)
    if rest > 0.0:
        spread_by_room(rest, eligible or fallback, [max(v.mu_rps, 1e-9) for v in views], assigned)
    return assigned
