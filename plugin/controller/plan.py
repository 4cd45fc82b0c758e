"""The controller's decision as a value: ``Plan``, immutable, numbered, and exactly the same after a JSON round trip,
so that it can be logged, compared, replayed and sent to another process (the control plane's clients apply it).

    Plan
      generation   1, 2, 3 ... per controller: a later plan supersedes an earlier one
      at_s         the controller's clock when it was decided
      endpoints    endpoint names, in fleet order (every per-endpoint tuple is in this order)
      mode         COST or CAPACITY (AUTO resolved); panic: every endpoint counts as healthy
      available    per endpoint: whether the controller lets it take requests (health and ejection)
      default      the ModelPlan for models not planned yet (the models' plans combined)
      models       per model: its ModelPlan (weights and load per request class) and interactive in-flight
                   limits (0 = none); a priority route (``cost_picker: cheapest_first``) also carries the same load
                   routed in proportion (``proportional``), for a router that cannot spill by priority: Envoy,
                   whose overflow goes to every available endpoint by weight (``Plan.proportional()``)

JSON: ``to_json()`` / ``Plan.from_json(text)``; floats are written with ``repr`` precision (Python's json, which
round-trips every finite double exactly) and infinities as ``Infinity``, so ``Plan.from_json(p.to_json()) == p``
for every plan (a plan holds no NaN: weights are normalised, loads and limits are finite or infinite).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Mapping, Optional, Tuple

from .model import BATCH, ModelPlan

__all__ = ["Plan", "ModelRoute"]


@dataclasses.dataclass(frozen=True)
class ModelRoute:
    """One model's part of a plan: its ModelPlan and the interactive in-flight limits per endpoint (0 = none);
    ``proportional``: for a priority route, the route it was made from (weights in proportion to the load)."""

    plan: ModelPlan
    limits: Tuple[int, ...]
    proportional: Optional["ModelRoute"] = None


@dataclasses.dataclass(frozen=True)
class Plan:
    """The controller's decision for one tick (module docstring)."""

    generation: int
    at_s: float
    endpoints: Tuple[str, ...]
    available: Tuple[bool, ...]
    default: ModelPlan
    models: Tuple[Tuple[str, ModelRoute], ...] = ()

    @property
    def mode(self) -> str:
        return self.default.mode

    @property
    def panic(self) -> bool:
        return self.default.panic

    @property
    def interactive_weights(self) -> Tuple[float, ...]:
        return self.default.interactive_weights

    @property
    def batch_weights(self) -> Tuple[float, ...]:
        return self.default.batch_weights

    @property
    def interactive_rps(self) -> Tuple[float, ...]:
        return self.default.interactive_rps

    @property
    def assigned_rps(self) -> Tuple[float, ...]:
        return self.default.assigned_rps

    def route(self, model: str) -> Optional[ModelRoute]:
        """The model's route, None when the plan has none for it (the default weights apply)."""
        for name, route in self.models:
            if name == model:
                return route
        return None

    def weights(self, model: str, request_class: str) -> Tuple[float, ...]:
        """The weights of a (model, request class) dispatcher: its model's, else the default's."""
        route = self.route(model)
        plan = route.plan if route is not None else self.default
        return plan.batch_weights if request_class == BATCH else plan.interactive_weights

    def limits(self, model: str) -> Tuple[int, ...]:
        """Interactive in-flight limits of a model (none for a model the plan does not cover)."""
        route = self.route(model)
        return route.limits if route is not None else (0,) * len(self.endpoints)

    def proportional(self) -> "Plan":
        """This plan with every priority route replaced by the proportional route it was made from: the same load,
        weights in proportion to it and the usual limits (for a router whose overflow cannot follow a priority)."""
        if not any(r.proportional is not None for _, r in self.models):
            return self
        return dataclasses.replace(self, models=tuple((k, r.proportional or r) for k, r in self.models))

    # ---- JSON ----------------------------------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        return {"generation": self.generation, "at_s": self.at_s, "endpoints": list(self.endpoints),
                "available": list(self.available), "default": _model_plan_dict(self.default),
                "models": {name: _route_dict(r) for name, r in self.models}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        models = tuple((name, _route(r)) for name, r in data.get("models", {}).items())
        return cls(int(data["generation"]), float(data["at_s"]), tuple(str(x) for x in data["endpoints"]),
                   tuple(bool(x) for x in data["available"]), _model_plan(data["default"]),
                   tuple(sorted(models, key=lambda item: item[0])))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.from_dict(json.loads(text))


def _route_dict(route: ModelRoute) -> Dict[str, Any]:
    out = {"plan": _model_plan_dict(route.plan), "limits": list(route.limits)}
    if route.proportional is not None:  # only where set: a plan without priority routes reads as before
        out["proportional"] = _route_dict(route.proportional)
    return out


def _route(data: Mapping[str, Any]) -> ModelRoute:
    inner = data.get("proportional")
    return ModelRoute(_model_plan(data["plan"]), tuple(int(x) for x in data["limits"]),
                      _route(inner) if inner is not None else None)


def _model_plan_dict(plan: ModelPlan) -> Dict[str, Any]:
    return {field.name: (list(value) if isinstance(value, tuple) else value)
            for field in dataclasses.fields(plan) for value in (getattr(plan, field.name),)}


def _model_plan(data: Mapping[str, Any]) -> ModelPlan:
    def floats(key: str) -> Tuple[float, ...]:
        return tuple(float(x) for x in data[key])

    return ModelPlan(mode=str(data["mode"]), interactive_rps=floats("interactive_rps"), batch_rps=floats("batch_rps"),
                     interactive_weights=floats("interactive_weights"), batch_weights=floats("batch_weights"),
                     panic=bool(data.get("panic", False)))
