"""Batch requests: always cost-first, into the room interactive traffic leaves; they may queue, never displace."""
from __future__ import annotations

from typing import List, Sequence

from ..model import EndpointView
from .cost import fill_in_order, spread_by_room

__all__ = ["allocate_batch"]


def allocate_batch(views: Sequence[EndpointView], demand_rps: float, eligible: Sequence[int],
                   interactive_rps: Sequence[float], utilisation: float) -> List[float]:
    """Batch load per endpoint, in every mode.

        room_i = max(0, utilisation x mu_i - external_i - interactive_i)    (interactive is placed first; where
                 interactive load runs, utilisation is capped by u_slo_i: batch queues in front of it too)
        1. fill the eligible endpoints (healthy; the SLO does not apply) by ascending c_i up to room_i;
        2. the rest queues: spread in proportion to mu_i over the eligible endpoints that carry no interactive
           load (so a batch queue never sits in front of an interactive request), or over all eligible if none.
    O(n log n) (the sort by c_i).
    """
    n = len(views)
    assigned = [0.0] * n
    # v.safe_room_rps(utilisation) where interactive load runs, else v.room_rps(utilisation), inline (no call per
    # endpoint): max(0, u x mu_i - external_i), u = min(utilisation, u_slo_i) or utilisation
    room = [max(0.0, max(0.0, (min(utilisation, v.slo_utilisation) if inter > 0.0 else utilisation) * v.mu_rps
                         - v.external_rps) - inter)
            for v, inter in zip(views, interactive_rps)]
    keys = {i: (views[i].cost_per_inference, i) for i in eligible}
    order = sorted(eligible, key=keys.__getitem__)
    rest = fill_in_order(demand_rps, order, room, assigned)
    if rest > 0.0:
        quiet = [i for i in eligible if interactive_rps[i] <= 0.0]
        spread_by_room(rest, quiet or list(eligible), [max(v.mu_rps, 1e-9) for v in views], assigned)
    return assigned
