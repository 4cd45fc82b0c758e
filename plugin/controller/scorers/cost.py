"""Scorer ``cost``: cheaper per inference is better."""
from __future__ import annotations

import math
from typing import List, Sequence

from ..model import EndpointView
from ..plugins import register_scorer


@register_scorer("cost")
class CostScorer:
    """score_i = c_min / c_i over the healthy endpoints, c_i = EndpointView.cost_per_inference (1 for the cheapest;
    a free endpoint scores 1; an endpoint with mu_i = 0 scores 0). c_min is computed once per ``fleet``: O(n) per rank."""

    def __init__(self) -> None:
        self._fleet: object = None
        self._c_min = 0.0

    def score(self, view: EndpointView, fleet: Sequence[EndpointView]) -> float:
        c = view.cost_per_inference
        if c == 0.0:
            return 1.0
        if c == math.inf:
            return 0.0
        if fleet is not self._fleet:
            self._fleet = fleet
            self._c_min = min((v.cost_per_inference for v in fleet if v.healthy), default=c)
        return min(1.0, self._c_min / c)

    def scores(self, fleet: Sequence[EndpointView]) -> List[float]:
        """``score(v, fleet)`` of every view of ``fleet``, in one pass (``plugins.rank`` calls it where it exists)."""
        costs = [v.cost_per_inference for v in fleet]
        healthy = [c for c, v in zip(costs, fleet) if v.healthy]
        inf, c_min = math.inf, None
        out = []
        for c in costs:
            if c == 0.0:
                out.append(1.0)
            elif c == inf:
                out.append(0.0)
            else:
                if c_min is None:  # as score(): the healthy minimum, else the first scored view's own cost
                    c_min = min(healthy) if healthy else c
                out.append(min(1.0, c_min / c))
        return out
