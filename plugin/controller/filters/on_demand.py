"""Filter ``on_demand``: interactive requests only on on-demand capacity (spot is for batch)."""
from __future__ import annotations

from ..model import BATCH, EndpointView
from ..plugins import register_filter


@register_filter("on_demand")
class OnDemandFilter:
    """keep = request_class is batch, or the endpoint is not spot."""

    def keep(self, view: EndpointView, request_class: str) -> bool:
        return request_class == BATCH or view.capacity_type != "spot"
