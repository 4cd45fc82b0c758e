"""Scorer ``on_demand_first``: prefer on-demand capacity to spot capacity (spot may be reclaimed)."""
from __future__ import annotations

from typing import Sequence

from ..model import EndpointView
from ..plugins import register_scorer


@register_scorer("on_demand_first")
class OnDemandFirstScorer:
    """score_i = 1 for on-demand, 0 for spot."""

    def score(self, view: EndpointView, fleet: Sequence[EndpointView]) -> float:
        return 0.0 if view.capacity_type == "spot" else 1.0
