"""Scorer ``latency``: faster service is better."""
from __future__ import annotations

from typing import Sequence

from ..model import EndpointView
from ..plugins import register_scorer


@register_scorer("latency")
class LatencyScorer:
    """score_i = l_min / l_i with l the light-load latency (service time); 0.5 when unknown. l_min once per fleet."""

    def __init__(self) -> None:
        self._fleet: object = None
        self._l_min = 0.0

    def score(self, view: EndpointView, fleet: Sequence[EndpointView]) -> float:
        if not view.latency_s > 0.0:
            return 0.5
        if fleet is not self._fleet:
            self._fleet = fleet
            self._l_min = min((v.latency_s for v in fleet if v.latency_s > 0.0), default=view.latency_s)
        return min(1.0, self._l_min / view.latency_s)
