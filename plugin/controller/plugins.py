"""Plug-in points of the policy, in the order a plan uses them (the Gateway API Inference Extension's Filter ->
Scorer -> Picker): filters (may this endpoint take this request class?), scorers (how good is it?) and pickers (how
much load does each endpoint get?).

Narrow, one-method interfaces (``typing.Protocol``); a registry per kind that refuses a duplicate name. Scorers return a
score in [0, 1]; the framework multiplies each by its weight and sums (``rank``); the mode's picker turns that order
and the eligible endpoints into load per endpoint. Built-ins live one per module in ``filters/``, ``scorers/`` and
``pickers/``. Names and weights come from the fleet file::

    controller:
      scorers: ["cost", "latency:0.2"]     # name or name:weight (default weight 1)
      filters: ["on_demand"]               # in addition to the built-in health and SLO filters
      cost_picker: cheapest_first          # COST mode's picker (the default)
      capacity_picker: headroom_spread     # CAPACITY mode's picker (the default)

The built-ins register themselves when ``tritonmix.controller`` is imported. Register your own before building a
controller::

    @register_scorer("my_score")
    class MyScore:
        def score(self, view: EndpointView, fleet: Sequence[EndpointView]) -> float: ...
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Protocol, Sequence, Tuple, TypeVar, runtime_checkable

from ..errors import ConfigError
from .model import EndpointView

__all__ = [
    "Scorer", "Filter", "Picker", "register_scorer", "register_filter", "register_picker", "scorer_names",
    "filter_names", "picker_names", "WeightedScorer", "build_scorers", "build_filters", "build_picker", "rank",
    "DEFAULT_SCORERS",
]

DEFAULT_SCORERS: Tuple[str, ...] = ("cost",)


@runtime_checkable
class Scorer(Protocol):
    """score(view, fleet) -> [0, 1]: 1 is best. ``fleet`` is every view of the tick (for normalising)."""

    def score(self, view: EndpointView, fleet: Sequence[EndpointView]) -> float: ...


@runtime_checkable
class Filter(Protocol):
    """keep(view, request_class) -> whether the endpoint may take requests of that class."""

    def keep(self, view: EndpointView, request_class: str) -> bool: ...


@runtime_checkable
class Picker(Protocol):
    """allocate(views, demand_rps, order, eligible, fallback, utilisation) -> interactive load per endpoint (req/s,
    indexed like ``views``). ``order``: every endpoint by descending score (``rank``); ``eligible``: healthy, SLO
    met, every filter passed; ``fallback``: healthy and passed, SLO not met (for overflow only); ``utilisation``:
    the target utilisation. The whole demand is placed (on the fallback, or queued, when the eligible are full)."""

    def allocate(self, views: Sequence[EndpointView], demand_rps: float, order: Sequence[int],
                 eligible: Sequence[int], fallback: Sequence[int], utilisation: float) -> List[float]: ...


T = TypeVar("T")
_SCORERS: Dict[str, Callable[[], Scorer]] = {}
_FILTERS: Dict[str, Callable[[], Filter]] = {}
_PICKERS: Dict[str, Callable[[], Picker]] = {}


def _register(table: Dict[str, Callable[[], T]], kind: str, name: str) -> Callable[[Callable[[], T]], Callable[[], T]]:
    def decorator(factory: Callable[[], T]) -> Callable[[], T]:
        if name in table:
            raise ValueError(f"a {kind} named {name!r} is already registered")
        table[name] = factory
        return factory

    return decorator


def register_scorer(name: str) -> Callable[[Callable[[], Scorer]], Callable[[], Scorer]]:
    """Class decorator (or call with a zero-argument factory): adds a scorer; ValueError on a duplicate name."""
    return _register(_SCORERS, "scorer", name)


def register_filter(name: str) -> Callable[[Callable[[], Filter]], Callable[[], Filter]]:
    """Class decorator: adds a filter; ValueError on a duplicate name."""
    return _register(_FILTERS, "filter", name)


def register_picker(name: str) -> Callable[[Callable[[], Picker]], Callable[[], Picker]]:
    """Class decorator: adds a picker; ValueError on a duplicate name."""
    return _register(_PICKERS, "picker", name)


def scorer_names() -> Tuple[str, ...]:
    return tuple(sorted(_SCORERS))


def filter_names() -> Tuple[str, ...]:
    return tuple(sorted(_FILTERS))


def picker_names() -> Tuple[str, ...]:
    return tuple(sorted(_PICKERS))


@dataclasses.dataclass(frozen=True)
class WeightedScorer:
    name: str
    weight: float
    scorer: Scorer


def build_scorers(specs: Sequence[str]) -> Tuple[WeightedScorer, ...]:
    """``["cost", "latency:0.2"]`` -> weighted scorers; ConfigError naming ``controller.scorers`` when unknown."""
    result: List[WeightedScorer] = []
    for spec in specs or DEFAULT_SCORERS:
        name, _, weight_text = spec.partition(":")
        if name not in _SCORERS:
            raise ConfigError(f"controller.scorers: unknown scorer {name!r} (known: {', '.join(sorted(_SCORERS))})")
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise ConfigError(f"controller.scorers: {spec!r}: the weight after ':' must be a number") from None
        if not weight >= 0.0:
            raise ConfigError(f"controller.scorers: {spec!r}: the weight must be >= 0")
        result.append(WeightedScorer(name, weight, _SCORERS[name]()))
    return tuple(result)


def build_filters(names: Sequence[str]) -> Tuple[Filter, ...]:
    unknown = [n for n in names if n not in _FILTERS]
    if unknown:
        raise ConfigError(f"controller.filters: unknown filter(s) {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(sorted(_FILTERS))})")
    return tuple(_FILTERS[n]() for n in names)


def build_picker(name: str, setting: str) -> Picker:
    """The picker registered as ``name``; ConfigError naming ``controller.<setting>`` when unknown."""
    if name not in _PICKERS:
        raise ConfigError(f"controller.{setting}: unknown picker {name!r} (known: {', '.join(sorted(_PICKERS))})")
    return _PICKERS[name]()


def rank(views: Sequence[EndpointView], scorers: Sequence[WeightedScorer]) -> List[int]:
    """Endpoint indexes (positions in ``views``) by descending sum_k weight_k * clamp(score_k, 0, 1); ties go to
    the lower latency, then the lower index. A scorer may also have ``scores(views)``: every view's score in one
    pass, the same as ``score(view, views)`` for each (a call per endpoint is a tenth of a tick at 1,000
    endpoints). O(n k + n log n)."""
    totals = [0.0] * len(views)
    for ws in scorers:
        weight, batch = ws.weight, getattr(ws.scorer, "scores", None)
        if weight == 0.0:
            continue
        scores = batch(views) if batch is not None else [ws.scorer.score(view, views) for view in views]
        totals = [total + weight * min(1.0, max(0.0, x)) for total, x in zip(totals, scores)]
    inf = math.inf
    keys = [(-total, view.latency_s if view.latency_s == view.latency_s else inf, pos)
            for pos, (total, view) in enumerate(zip(totals, views))]
    return sorted(range(len(views)), key=keys.__getitem__)
