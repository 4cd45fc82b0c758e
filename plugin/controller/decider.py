"""The Decider: per-model views and this tick's facts -> a ``Plan``. No I/O and no clock of its own: the same
inputs in the same state give the same plan. Its state is AUTO's mode (``policy.AutoMode``: dwell and hysteresis)
and the smoothed fleet-wide miss and error shares (``deltas.Shares``).

    mode    AUTO over ``detect_shortfall``: fleet-wide misses, errors (of the endpoints still routable: the
            failed attempts of one that is down or ejected are its event's) and events (an event counts only when it
            names an endpoint that carried interactive load in the last plan, and only while some model's demand
            exceeds cost_margin x the room this tick, the lost endpoint out of it: the demand test's verdict at
            once, before the median room follows; while the endpoints left hold the demand with COST's margin,
            the plan moves the load and nothing falls short), and the demand of the model nearest its cheap set's
            limit (``per_model.binding``), judged against the median room of the last ticks
            (``policy.RoomMedian``, which still counts the lost endpoint for a few ticks)
    plans   ``make_plan`` per model, with the trial share of the endpoints on probation (after a latency ejection)
    limits  per model, the interactive in-flight limits (``queueing.inflight_limit`` from each endpoint's slots and
            service time; none for an endpoint on probation), less the other clients' requests the server holds
            (``queueing.effective_limit``)
    priority with a cost picker that routes by priority (``cheapest_first``), COST mode, no panic: the endpoints the
            plan loads, in tiers (``policy.cost.tiers``) by rank, get weights PRIORITY_DECAY^t (tier t, within a
            tier in proportion to their load), scaled to what the probes and probation trials leave; so the
            dispatcher sends every request to the best tier while it is under its in-flight limit (the depth
            past which a request would wait beyond the picker's ``limit_share`` of the SLO; the limits of the
            route are recomputed at it) and overflows to the next one (``Dispatcher``:
            limits), as a cheapest-first spill-over does, instead of splitting at random in proportion to the
            load (which sends requests to dearer tiers while the cheap one has room). Only where every loaded
            endpoint has a limit (one without would never overflow); else the plan's weights stand
    plan    one ``Plan``: the models' plans combined as the default, numbered by generation
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, FrozenSet, Mapping, Optional, Sequence, Tuple

from .decisions import Decision, DecisionLog
from .model import BATCH, CAPACITY, INTERACTIVE, EndpointView, ModelPlan
from .deltas import EndpointTick, Shares
from .per_model import binding, combine_plans, demand_by_model
from .plan import ModelRoute, Plan
from .plugins import build_filters, build_picker, build_scorers, rank
from .policy import AutoMode, PlanSettings, RoomMedian, detect_shortfall, make_plan
from .policy.cost import tiers
from .policy.probation import with_trial_share
from .queueing import LIMIT_SLO_SHARE, effective_limit, inflight_limit

__all__ = ["Decider", "Facts", "PROBATION_SHARE", "PROBATION_LIMIT"]

#: the interactive share of each endpoint on probation after a latency ejection
PROBATION_SHARE = 0.02
#: the in-flight limit of each endpoint on probation: its trials go one at a time
PROBATION_LIMIT = 1
#: a priority route's weight of each tier against the one before it (module docstring): the dispatcher's two
#: candidates both fall on the best tier all but ~2% of the time, and an idle endpoint of the next tier drawn as
#: one of them takes the request (it carries less load per unit of weight): that keeps it measured
PRIORITY_DECAY = 0.01

Views = Mapping[Optional[str], Sequence[EndpointView]]


@dataclasses.dataclass(frozen=True)
class Facts:
    """What else the Decider needs of one tick, besides the views."""

    ticks: Sequence[EndpointTick]                      # per endpoint (miss and error shares)
    events: Sequence[str]                              # health events, "kind:endpoint name"
    rates: Mapping[Any, float]                         # demand per (model, request class), req/s
    measured: Mapping[Optional[str], Sequence[bool]]   # per model: capacity measured (not only hinted) per endpoint
    slots: Mapping[str, Sequence[Tuple[float, float]]]  # per model seen: (slots C, service time s) per endpoint
    available: Sequence[bool]                          # routable per endpoint (health and ejection)
    panic: bool
    capacity_grew: bool
    probation: FrozenSet[int] = frozenset()            # endpoints on probation now
    #: per model seen: other clients' requests at each endpoint's server (its pending count less ours in flight,
    #: newest scrape; 0 unknown)
    others: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)


class Decider:
    """Views + facts -> Plan (module docstring). ``settings``: the fleet's ControllerSettings; ``mode``: the
    configured mode; ``names``: the endpoints in fleet order; ``timer_factor``: AUTO's dwell is
    ``settings.dwell_s x timer_factor`` (the controller's jitter: clients do not leave CAPACITY in step)."""

    def __init__(self, settings: Any, mode: str, slo_s: float, names: Sequence[str], log: DecisionLog,
                 timer_factor: float = 1.0) -> None:
        self.settings = settings
        self.slo_s = slo_s
        self.names = tuple(names)
        self.auto = AutoMode(mode, settings.dwell_s * timer_factor, settings.hysteresis)
        self.scorers, self.filters = build_scorers(settings.scorers), build_filters(settings.filters)
        self.pickers = (build_picker(settings.cost_picker, "cost_picker"),
                        build_picker(settings.capacity_picker, "capacity_picker"))
        self._plan_settings = PlanSettings(settings.target_utilisation, settings.probe_share)
        self._shares = Shares()
        self._rooms = RoomMedian()
        self._log = log
        self.last: Optional[Plan] = None

    def decide(self, now: float, views: Views, facts: Facts) -> Plan:
        s = self.settings
        carried = [] if self.last is None else [e for e in facts.events if self._carried(e)]
        fractions = self._shares.update(facts.ticks, facts.available)  # a down or ejected one's failures: its event
        lam, lam_batch = demand_by_model(facts.rates, INTERACTIVE), demand_by_model(facts.rates, BATCH)
        room, rated, known = {}, {}, {}
        u, filters = s.target_utilisation, self.filters
        for m, vs in views.items():
            eligible = [v for v in vs if v.healthy and v.meets_slo
                        and (not filters or all(f.keep(v, INTERACTIVE) for f in filters))]
            room[m] = sum([v.safe_room_rps(u) for v in eligible])
            # the rated room: the same SLO-safe share of each endpoint as K, of its configured slots over its
            # measured service time (C_0 / s_i), so that K and K_r agree once the estimates have settled
            rated[m] = sum([min(u, v.slo_utilisation) * v.service_rps for v in eligible if v.service_rps > 0.0])
            measured = facts.measured[m]
            known[m] = all([measured[v.index] for v in eligible])
        now_room = room
        room = {k: self._rooms.update(k, r) for k, r in room.items()}  # AUTO judges the median of recent ticks
        judged = [m for m in views if known[m]] or list(views)
        m = binding({k: lam.get(k, 0.0) for k in judged}, room)
        if carried and not any(lam.get(k, 0.0) > s.cost_margin * now_room[k] for k in views):
            carried = []  # the endpoints left hold the demand with COST's own margin: the plan moves it, no switch
        shortfall = detect_shortfall(lam.get(m, 0.0), room[m], fractions["miss_share"], fractions["error_share"],
                                     carried, cost_margin=s.cost_margin, hysteresis=s.hysteresis,
                                     slo_miss_threshold=s.slo_miss_threshold, capacity_known=known[m],
                                     rated_capacity_rps=rated[m])
        change = self.auto.update(now, shortfall, capacity_grew=facts.capacity_grew)
        if change is not None:
            self._log.add(Decision(now, "mode", f"mode {change.old} -> {change.new}: {', '.join(change.reasons)}",
                                   old=change.old, new=change.new, reasons=change.reasons, figures=change.figures,
                                   model=m if len(views) > 1 else None))
        plans: Dict[Optional[str], ModelPlan] = {}
        for k, vs in views.items():
            plans[k] = self._with_probation(facts, make_plan(
                vs, self.auto.mode, lam.get(k, 0.0), lam_batch.get(k, 0.0), self.scorers, self.filters,
                self._plan_settings, panic=facts.panic, pickers=self.pickers))
        routes = tuple(sorted((k, ModelRoute(p, self._limits(facts, k))) for k, p in plans.items() if k is not None))
        if getattr(self.pickers[0], "priority", False):
            share = getattr(self.pickers[0], "limit_share", LIMIT_SLO_SHARE)
            routes = tuple((k, route if route.plan.mode == CAPACITY or route.plan.panic else
                            self._priority(views[k], route, facts, self._limits(facts, k, share)))
                           for k, route in routes)  # CAPACITY and panic keep their route: no second limits
        generation = 1 if self.last is None else self.last.generation + 1
        self.last = Plan(generation, now, self.names, tuple(map(bool, facts.available)),
                         combine_plans(plans, lam), routes)
        return self.last

    def _carried(self, event: str) -> bool:
        """Events name an endpoint; only one that carried interactive load in the last plan is a shortfall."""
        name = event.partition(":")[2]
        i = self.names.index(name) if name in self.names else -1
        last = self.last
        return 0 <= i < len(last.interactive_rps) and last.interactive_rps[i] > 0.0 if last is not None else False

    def _with_probation(self, facts: Facts, plan: ModelPlan) -> ModelPlan:
        """Slow start after a latency ejection (``policy.probation.with_trial_share``)."""
        if not facts.probation or facts.panic:
            return plan
        return with_trial_share(plan, sorted(facts.probation), PROBATION_SHARE)

    def _priority(self, views: Sequence[EndpointView], route: ModelRoute, facts: Facts,
                  limits: Sequence[int]) -> ModelRoute:
        """The route with priority weights and ``limits`` (module docstring: ``priority``), or as it was."""
        plan = route.plan
        if plan.mode == CAPACITY or plan.panic:
            return route
        rates, weights = plan.interactive_rps, plan.interactive_weights
        loaded = [i for i, (r, w) in enumerate(zip(rates, weights)) if r > 0.0 and w > 0.0 and i not in facts.probation]
        if not loaded or any(i >= len(limits) or limits[i] <= 0 for i in loaded):
            return route
        members = set(loaded)
        out = [0.0 if i in members else w for i, w in enumerate(weights)]  # probes and trials keep theirs
        left = 1.0 - sum(out)
        groups = tiers(views, rank(views, self.scorers), loaded)
        norm = sum(PRIORITY_DECAY ** t for t in range(len(groups)))
        for t, tier in enumerate(groups):
            load = sum(rates[i] for i in tier)
            for i in tier:
                out[i] = left * PRIORITY_DECAY ** t / norm * rates[i] / load
        return ModelRoute(dataclasses.replace(plan, interactive_weights=tuple(out)), tuple(limits), proportional=route)

    def _limits(self, facts: Facts, model: str, share: float = LIMIT_SLO_SHARE) -> Tuple[int, ...]:
        """Interactive in-flight limits of a model (``queueing.inflight_limit`` from its slots C and service time s
        per endpoint, less the other clients' requests at it: ``queueing.effective_limit``); PROBATION_LIMIT for an
        endpoint on probation: its trials go one at a time, so one readmitted while still slow costs one request's
        wait before the stall watch or the tick ejects it again, never a burst (with no limit the core picks it
        whenever it is drawn with nothing in flight). The price: with a limit it may take one request of overflow
        when every other endpoint is full."""
        slots = facts.slots.get(model)
        if slots is None:
            return tuple(PROBATION_LIMIT if i in facts.probation else 0 for i in range(len(self.names)))
        others = facts.others.get(model) or (0.0,) * len(slots)
        slo_s = self.slo_s
        limits = [inflight_limit(c, s_, slo_s, share) for c, s_ in slots]
        for i, other in enumerate(others[: len(limits)]):
            if other >= 1.0:  # effective_limit changes nothing below one request of others
                limits[i] = effective_limit(limits[i], other)
        for i in facts.probation:
            if i < len(limits):
                limits[i] = PROBATION_LIMIT
        return tuple(limits)


