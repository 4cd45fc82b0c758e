"""Picker ``tiered_fill`` (COST mode's default): the best-ranked endpoints first, each up to its SLO-safe room
(``policy.cost.allocate_cost`` states the rule)."""
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
