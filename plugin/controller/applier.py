"""The Applier: a ``Plan`` -> one client's router. Each dispatcher gets its model's weights (the plan's default for
a model it does not cover yet), each interactive dispatcher its model's in-flight limits, and a dispatcher created
between two plans gets the last plan's weights at once. The router's availability mask is pushed by the loop as
health changes (it cannot wait for the next plan); the plan's ``available`` is what other processes follow: an
Applier built with ``follow_available=True`` (a client following a control plane) pushes it to the router too.

``offer(plan)`` applies a plan only when it is sound for this router, and otherwise changes nothing, logs why and
counts it in ``refused`` (by reason):

    stale       its generation is not newer than the plan in force (of the same source: ``offer(plan,
                source=...)`` with another source than the plan in force's starts its numbering afresh, as a
                client does when it moves to another control-plane replica)
    endpoints   it names other endpoints (or another order) than the router's; a router whose set grew since the
                plan was made (endpoints that joined: ``tritonmix.request.slots``) takes it, the newcomers at 0
    shape       a weight or limit vector of the wrong length
    weights     a weight that is negative or not finite
    limits      a negative in-flight limit
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from .model import INTERACTIVE, ModelPlan
from .plan import Plan

__all__ = ["Applier"]

_log = logging.getLogger(__name__)


class Applier:
    """Applies plans to ``router`` (the ``tritonmix.request.Router`` contract)."""

    def __init__(self, router: Any, follow_available: bool = False) -> None:
        self.router = router
        self.follow_available = follow_available
        self.plan: Optional[Plan] = None
        self.source: Optional[str] = None
        self._available: Dict[int, bool] = {}
        #: plans refused so far, by reason (module docstring)
        self.refused: Dict[str, int] = {}
        router.add_listener(self._on_new_dispatcher)

    def offer(self, plan: Plan, source: Optional[str] = None) -> bool:
        """Apply ``plan`` if it is sound (module docstring); True when it was applied."""
        reason = self._fault(plan, source)
        if reason is not None:
            self.refused[reason] = self.refused.get(reason, 0) + 1
            _log.warning("plan %d refused (%s); the plan in force stays", plan.generation, reason)
            return False
        self.source = source
        self._apply(plan)
        return True

    def detach(self) -> None:
        """Stop following the router's new dispatchers (a controller that stopped for good)."""
        if hasattr(self.router, "remove_listener"):
            self.router.remove_listener(self._on_new_dispatcher)

    def release(self) -> None:
        """Hand the router back with every endpoint available (a following client falls back to its own
        controller, which starts from that); the next plan offered is applied whatever its generation."""
        for i, available in list(self._available.items()):
            if not available:
                self.router.set_endpoint_available(i, True)
        self._available.clear()
        self.plan, self.source = None, None

    def _fault(self, plan: Plan, source: Optional[str]) -> Optional[str]:
        if self.plan is not None and source == self.source and plan.generation <= self.plan.generation:
            return "stale"
        names = tuple(self.router.endpoint_names())
        if tuple(plan.endpoints) != names[: len(plan.endpoints)]:
            return "endpoints"
        n = len(plan.endpoints)
        plans = [plan.default] + [route.plan for _, route in plan.models]
        vectors = [v for p in plans for v in _weight_vectors(p)]
        limits = [route.limits for _, route in plan.models]
        if any(len(v) != n for v in vectors + limits) or len(plan.available) != n:
            return "shape"
        if not all(all(map(math.isfinite, v)) and (not v or min(v) >= 0.0) for v in vectors):  # C loops: O(n)
            return "weights"
        if any(v and min(v) < 0 for v in limits):
            return "limits"
        return None

    def _apply(self, plan: Plan) -> None:
        self.plan = plan
        router = self.router
        pad = len(router.endpoint_names()) - len(plan.endpoints)  # endpoints that joined since the plan: 0 for now
        for model, request_class in router.dispatchers():
            router.set_weights(model, request_class, _padded(plan.weights(model, request_class), pad, 0.0))
            if request_class == INTERACTIVE and hasattr(router, "set_limits"):
                router.set_limits(model, request_class, _padded(plan.limits(model), pad, 0))
        if sum(plan.interactive_weights) > 0.0:
            router.set_default_weights(_padded(plan.interactive_weights, pad, 0.0))
        if self.follow_available:
            for i, available in enumerate(plan.available):
                if available != self._available.get(i, True):
                    router.set_endpoint_available(i, available)
                    self._available[i] = available

    def _on_new_dispatcher(self, key: Tuple[str, str]) -> None:
        plan = self.plan
        if plan is None:
            return
        weights = plan.weights(*key)
        if sum(weights) > 0.0:
            pad = len(self.router.endpoint_names()) - len(weights)
            self.router.set_weights(key[0], key[1], _padded(weights, pad, 0.0))


def _padded(values: Sequence[Any], pad: int, fill: Any) -> Tuple[Any, ...]:
    return tuple(values) + (fill,) * pad if pad > 0 else tuple(values)


def _weight_vectors(plan: ModelPlan) -> Iterable[Sequence[float]]:
    return (plan.interactive_rps, plan.batch_rps, plan.interactive_weights, plan.batch_weights)
