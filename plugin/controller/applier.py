"""The Applier: a ``Plan`` -> one client's router. Each dispatcher gets its model's weights (the plan's default for
a model it does not cover yet), each interactive dispatcher its model's in-flight limits, and a dispatcher created
between two plans gets the last plan's weights at once. The router's availability mask is pushed by the loop as
health changes (it cannot wait for the next plan); the plan's ``available`` is what other processes follow.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

from .model import INTERACTIVE
from .plan import Plan

__all__ = ["Applier"]


class Applier:
    """Applies plans to ``router`` (the ``tritonmix.request.Router`` contract)."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.plan: Optional[Plan] = None
        router.add_listener(self._on_new_dispatcher)

    def apply(self, plan: Plan) -> None:
        self.plan = plan
        router = self.router
        for model, request_class in router.dispatchers():
            router.set_weights(model, request_class, plan.weights(model, request_class))
            if request_class == INTERACTIVE and hasattr(router, "set_limits"):
                router.set_limits(model, request_class, plan.limits(model))
        if sum(plan.interactive_weights) > 0.0:
            router.set_default_weights(plan.interactive_weights)

    def _on_new_dispatcher(self, key: Tuple[str, str]) -> None:
        plan = self.plan
        if plan is None:
            return
        weights = plan.weights(*key)
        if sum(weights) > 0.0:
            self.router.set_weights(key[0], key[1], weights)
