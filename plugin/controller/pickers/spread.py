"""Picker ``headroom_spread`` (CAPACITY mode's default): every eligible endpoint in proportion to its headroom, so
each runs at the same utilisation (``policy.capacity.allocate_capacity`` states the rule); the ranking is unused."""
from __future__ import annotations

from typing import List, Sequence

from ..model import EndpointView
from ..plugins import register_picker
from ..policy.capacity import allocate_capacity


@register_picker("headroom_spread")
class HeadroomSpread:
    def allocate(self, views: Sequence[EndpointView], demand_rps: float, order: Sequence[int],
                 eligible: Sequence[int], fallback: Sequence[int], utilisation: float) -> List[float]:
        return allocate_capacity(views, demand_rps, eligible, fallback)
