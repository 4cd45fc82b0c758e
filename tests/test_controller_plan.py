"""The controller's Plan: a numbered value that survives a JSON round trip exactly, and what the Applier makes of it."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, List

from hypothesis import given, settings
from hypothesis import strategies as st

from tritonmix.controller import Plan
from tritonmix.controller.applier import Applier
from tritonmix.controller.model import ModelPlan
from tritonmix.controller.plan import ModelRoute
from tritonmix.controller.simulation import ServerModel, Simulation
from tritonmix.fleet import Fleet
from tritonmix.request import Router

N = 3
FLOATS = st.floats(min_value=0.0, allow_nan=False, allow_infinity=True)
VECTOR = st.tuples(*[FLOATS] * N)


@st.composite
def model_plans(draw: Any) -> ModelPlan:
    return ModelPlan(mode=draw(st.sampled_from(["cost", "capacity"])), interactive_rps=draw(VECTOR),
                     batch_rps=draw(VECTOR), interactive_weights=draw(VECTOR), batch_weights=draw(VECTOR),
                     panic=draw(st.booleans()))


@st.composite
def plans(draw: Any) -> Plan:
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=0, max_size=3, unique=True))
    def route() -> ModelRoute:
        return ModelRoute(draw(model_plans()), draw(st.tuples(*[st.integers(0, 64)] * N)))

    # a priority route carries the proportional route it was made from (cost_picker: cheapest_first)
    routes = tuple(sorted((name, dataclasses.replace(route(), proportional=route() if draw(st.booleans()) else None))
                          for name in names))
    return Plan(generation=draw(st.integers(1, 2**53)), at_s=draw(st.floats(allow_nan=False, allow_infinity=False)),
                endpoints=tuple(f"ep-{i}" for i in range(N)), available=draw(st.tuples(*[st.booleans()] * N)),
                default=draw(model_plans()), models=routes)


@settings(max_examples=200, deadline=None)
@given(plan=plans())
def test_a_plan_survives_a_json_round_trip_exactly(plan: Plan) -> None:
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again == plan
    assert again.to_json() == text
    json.loads(text)  # the text is JSON (Infinity aside, which Python's json reads and writes)


def _fleet() -> Fleet:
    eps = [{"name": n, "url": f"10.0.0.{k + 1}:8000", "accelerator": acc, "price_per_hour": price, "max_rps": rps,
            "max_concurrency": 1}
           for k, (n, acc, price, rps) in enumerate([("inf2", "neuron", 0.76, 14.9), ("g5", "gpu", 1.0, 14.7),
                                                     ("cpu", "cpu", 0.36, 0.5)])]
    return Fleet.from_dict({"endpoints": eps, "slo_ms": 150, "controller": {"interval_s": 0.5}})


def test_the_controllers_plans_are_numbered_and_round_trip() -> None:
    fleet = _fleet()
    sim = Simulation.build(fleet, [ServerModel(0.067), ServerModel(0.068), ServerModel(2.0)], seed=3, jitter=0.0)
    sim.run(5.0, {("sd", "interactive"): 8.0})
    generations = [p.generation for _, p in sim.ticks]
    assert generations == list(range(1, len(generations) + 1))
    for _, plan in sim.ticks:
        assert Plan.from_json(plan.to_json()) == plan
    last = sim.ticks[-1][1]
    assert last.route("sd") is not None and last.endpoints == ("inf2", "g5", "cpu")
    assert math.isclose(sum(last.weights("sd", "interactive")), 1.0)


def test_a_plan_applied_to_another_router_sets_its_weights_and_limits() -> None:
    fleet = _fleet()
    default = ModelPlan("cost", (1.0, 0.0, 0.0), (0.0,) * 3, (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    sd = ModelPlan("cost", (2.0, 2.0, 0.0), (0.0,) * 3, (0.5, 0.5, 0.0), (0.0, 0.0, 1.0))
    plan = Plan(7, 1.0, ("inf2", "g5", "cpu"), (True,) * 3, default, (("sd", ModelRoute(sd, (2, 3, 0))),))
    router = Router(fleet, seed=1)
    router.dispatcher("sd", "interactive")
    applier = Applier(router)
    assert applier.offer(Plan.from_json(plan.to_json()))  # as a client of the control plane would receive it
    d = router.dispatchers()[("sd", "interactive")]
    assert d.weights() == (0.5, 0.5, 0.0) and d.limits() == (2, 3, 0)
    late: List[Any] = [router.dispatcher("other", "batch"), router.dispatcher("sd", "batch")]
    assert late[0].weights() == (0.0, 0.0, 1.0) and late[1].weights() == (0.0, 0.0, 1.0)


def test_a_stale_or_malformed_plan_changes_nothing_and_is_counted() -> None:
    
    fleet = _fleet()
    router = Router(fleet, seed=1)
    d = router.dispatcher("sd", "interactive")
    applier = Applier(router)
    good = ModelPlan("cost", (1.0, 1.0, 0.0), (0.0,) * 3, (0.5, 0.5, 0.0), (0.0, 0.0, 1.0))
    assert applier.offer(Plan(3, 1.0, ("inf2", "g5", "cpu"), (True,) * 3, good))
    nan = dataclasses.replace(good, interactive_weights=(float("nan"), 1.0, 0.0))
    negative_limit = (("sd", ModelRoute(good, (1, -1, 0))),)
    offers = {
        "stale": Plan(3, 2.0, ("inf2", "g5", "cpu"), (True,) * 3, good),
        "endpoints": Plan(4, 2.0, ("inf2", "g5", "tpu"), (True,) * 3, good),
        "shape": Plan(5, 2.0, ("inf2", "g5", "cpu"), (True,) * 2, good),
        "weights": Plan(6, 2.0, ("inf2", "g5", "cpu"), (True,) * 3, nan),
        "limits": Plan(7, 2.0, ("inf2", "g5", "cpu"), (True,) * 3, good, negative_limit),
    }
    for reason, plan in offers.items():
        assert not applier.offer(plan), reason
    assert applier.refused == {reason: 1 for reason in offers}
    assert applier.plan is not None and applier.plan.generation == 3 and d.weights() == (0.5, 0.5, 0.0)
