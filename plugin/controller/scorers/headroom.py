"""Scorer ``headroom``: the share of its capacity that other clients leave free."""
from __future__ import annotations

from typing import Sequence

from ..model import EndpointView
from ..plugins import register_scorer


@register_scorer("headroom")
class HeadroomScorer:
    """score_i = max(0, 1 - external_i / mu_i): 1 when nobody else uses it."""

    def score(self, view: EndpointView, fleet: Sequence[EndpointView]) -> float:
        if view.mu_rps <= 0.0:
            return 0.0
        return max(0.0, 1.0 - view.external_rps / view.mu_rps)
