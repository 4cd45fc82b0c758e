"""CAPACITY mode: spread over every healthy endpoint in proportion to its headroom, for the lowest latency."""
from __future__ import annotations

from typing import List, Sequence

from ..model import EndpointView

__all__ = ["allocate_capacity", "HEADROOM_FLOOR"]

#: an endpoint that other clients fill completely still gets this share of its mu as headroom (it is healthy)
HEADROOM_FLOOR = 0.05


def allocate_capacity(views: Sequence[EndpointView], demand_rps: float, eligible: Sequence[int],
                      fallback: Sequence[int]) -> List[float]:
    """Interactive load per endpoint in CAPACITY mode.

        headroom_i = max(mu_i - external_i, 0.05 mu_i)
        a_i        = lambda * headroom_i / sum_eligible(headroom)         (every eligible endpoint takes a share,
                                                                            so each runs at the same utilisation)
        when lambda exceeds the eligible headroom, the fallback endpoints (healthy, SLO not met) join the spread.
    O(n).
    """
    n = len(views)
    assigned = [0.0] * n
    headroom = [max(v.mu_rps - v.external_rps, HEADROOM_FLOOR * v.mu_rps, 1e-9) for v in views]
    members = list(eligible)
    if fallback and sum(headroom[i] for i in members) < demand_rps:
        members += list(fallback)
    if not members:
        return assigned
    total = sum(headroom[i] for i in members)
    for i in members:
        assigned[i] = demand_rps * headroom[i] / total
    return assigned

