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
        when lambda exceeds the eligible headroom H, the eligible endpoints take their whole headroom and only the
        excess lambda - H goes to the fallback endpoints (healthy, SLO not met: a CPU pool for interactive work),
        in proportion to their headroom up to it; beyond that, over the eligible ones by headroom (they queue).
        As COST's overflow does: a request sent where the SLO cannot be met misses for sure, so the fallback takes
        no share of load that the eligible endpoints hold.
    O(n).
    """
    n = len(views)
    assigned = [0.0] * n
    headroom = [max(v.mu_rps - v.external_rps, HEADROOM_FLOOR * v.mu_rps, 1e-9) for v in views]
    members = list(eligible) if eligible else list(fallback)
    if not members:
        return assigned
    total = sum(headroom[i] for i in members)
    if eligible and fallback and total < demand_rps:
        for i in members:
            assigned[i] = headroom[i]
        rest = demand_rps - total
        spare = sum(headroom[i] for i in fallback)
        share = min(1.0, rest / spare)
        for i in fallback:
            assigned[i] = share * headroom[i]
        rest -= share * spare
        if rest > 0.0:
            for i in members:
                assigned[i] += rest * headroom[i] / total
        return assigned
    for i in members:
        assigned[i] = demand_rps * headroom[i] / total
    return assigned
