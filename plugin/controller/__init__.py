"""The policy layer: a control loop that sets the dispatchers' weights from live cost and capacity signals.

Integration point for the clients: ``start_controller(fleet, router)`` returns a running controller (or None when
``fleet.controller.enabled`` is false). Until the control loop lands, it returns None and the clients keep the static
weights they derive from the fleet file's capacity hints.
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["start_controller"]


def start_controller(fleet: Any, router: Any) -> Optional[Any]:
    """Start the control loop for ``router``'s dispatchers; None while no controller is configured or built."""
    return None
