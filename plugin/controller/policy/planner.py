"""One tick's plan: eligibility, interactive allocation by mode, batch allocation, weights."""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

from ..model import BATCH, CAPACITY, INTERACTIVE, EndpointView, ModelPlan
from ..plugins import Filter, Picker, WeightedScorer, build_picker, rank
from .batch import allocate_batch

__all__ = ["PlanSettings", "make_plan", "default_pickers", "normalise", "MIN_DEMAND_RPS"]

#: a class with no measured demand is planned as if it had this much, so its first requests go somewhere sensible
MIN_DEMAND_RPS = 1e-3


@dataclasses.dataclass(frozen=True)
class PlanSettings:
    target_utilisation: float = 0.8
    probe_share: float = 0.02


def make_plan(views: Sequence[EndpointView], mode: str, interactive_rps: float, batch_rps: float,
              scorers: Sequence[WeightedScorer], filters: Sequence[Filter], settings: PlanSettings,
              panic: bool = False, pickers: Optional[Tuple[Picker, Picker]] = None) -> ModelPlan:
    """The plan for ``mode`` (COST or CAPACITY):

        eligible_interactive = healthy, meets the SLO, passes every filter
        fallback_interactive = healthy, passes the filters, SLO not met (used only when the eligible set is full)
        interactive: the mode's picker, ``pickers`` = (COST's, CAPACITY's), by default tiered_fill
                     (policy.cost.allocate_cost; the settings' default, cheapest_first, places the same load and
                     only routes it differently: the Decider's priority) and headroom_spread
                     (policy.capacity.allocate_capacity)
        batch: allocate_batch (cost-first)
        weight_i = a_i / sum(a); in COST mode the eligible endpoints that got nothing share ``probe_share`` of the
        interactive weight, so their latency keeps being measured.
    O(n log n) per tick.
    """
    u = settings.target_utilisation
    eligible_i, fallback_i = _eligible(views, filters, INTERACTIVE, require_slo=True)
    eligible_b, _ = _eligible(views, filters, BATCH, require_slo=False)
    demand_i = max(interactive_rps, MIN_DEMAND_RPS)
    cost_picker, capacity_picker = pickers or default_pickers()
    picker = capacity_picker if mode == CAPACITY else cost_picker
    inter = picker.allocate(views, demand_i, rank(views, scorers), eligible_i, fallback_i, u)
    batch = allocate_batch(views, max(batch_rps, MIN_DEMAND_RPS), eligible_b, inter, u)
    inter_w = normalise(inter)
    if mode != CAPACITY and settings.probe_share > 0.0:
        inter_w = _with_probes(inter_w, eligible_i, settings.probe_share)
    return ModelPlan(mode=mode, interactive_rps=_zero_floor(inter, interactive_rps), batch_rps=_zero_floor(batch, batch_rps),
                interactive_weights=inter_w, batch_weights=normalise(batch), panic=panic)


def default_pickers() -> Tuple[Picker, Picker]:
    """The built-in pickers of COST and CAPACITY mode."""
    return build_picker("tiered_fill", "cost_picker"), build_picker("headroom_spread", "capacity_picker")


def _eligible(views: Sequence[EndpointView], filters: Sequence[Filter], request_class: str,
              require_slo: bool) -> Tuple[List[int], List[int]]:
    eligible: List[int] = []
    fallback: List[int] = []
    for i, v in enumerate(views):
        if not v.healthy or (filters and not all(f.keep(v, request_class) for f in filters)):
            continue
        (eligible if v.meets_slo or not require_slo else fallback).append(i)
    return eligible, fallback


def normalise(assigned: Sequence[float]) -> Tuple[float, ...]:
    total = sum(assigned)
    if total <= 0.0:
        return (0.0,) * len(assigned)
    return tuple([a / total for a in assigned])


def _with_probes(weights: Tuple[float, ...], eligible: Sequence[int], probe_share: float) -> Tuple[float, ...]:
    idle = [i for i in eligible if weights[i] <= 0.0]
    if not idle or sum(weights) <= 0.0:
        return weights
    out = [w * (1.0 - probe_share) for w in weights]
    for i in idle:
        out[i] = probe_share / len(idle)
    return tuple(out)


def _zero_floor(assigned: Sequence[float], demand_rps: float) -> Tuple[float, ...]:
    """The assigned load as reported: 0 everywhere when the class had no demand (MIN_DEMAND_RPS is not load)."""
    if demand_rps <= 0.0:
        return tuple(0.0 for _ in assigned)
    return tuple(assigned)
