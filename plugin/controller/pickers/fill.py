"""Pickers ``tiered_fill``: the best-ranked endpoints first, each up to its SLO-safe room (``policy.cost.allocate_cost``
states the rule), routed in proportion to that load; and ``cheapest_first`` (COST mode's default): the same load
(what the plan reports and sizes replicas by), routed as a priority (``Decider``: the best tier takes every request
while it is under its in-flight limit, the next one the overflow)."""
from __future__ import annotations

from typing import List, Sequence

from ..model import EndpointView
from ..plugins import register_picker
from ..policy.cost import allocate_cost


@register_picker("tiered_fill")
class TieredFill:
    def allocate(self, views: Sequence[EndpointView], demand_rps: float, order: Sequence[int],
                 eligible: Sequence[int], fallback: Sequence[int], utilisation: float) -> List[float]:
        return allocate_cost(views, demand_rps, order, eligible, fallback, utilisation)


@register_picker("cheapest_first")
class CheapestFirst(TieredFill):
    """tiered_fill's load, routed as a priority by the Decider (``priority``): the weights rank the tiers, the
    in-flight limits (at ``limit_share`` of the SLO) spill."""

    priority = True
    #: its in-flight limits let a request wait this share of the SLO (tiered_fill's: queueing.LIMIT_SLO_SHARE,
    #: 0.9): the best tier is kept filled to its limits, so a cut of its capacity finds that queue there and every
    #: request in it waits longer by the cut's factor; a shorter queue leaves those requests room to still meet it
    limit_share = 0.6
