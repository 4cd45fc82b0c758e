"""The queueing model behind the SLO-safe load and the in-flight limits (plugin/controller/queueing.py), checked
against a small M/D/c simulation, and how the planner and the controller use it."""
from __future__ import annotations

import heapq
import math
import random

import pytest

from tritonmix.controller import COST, INTERACTIVE
from tritonmix.controller.model import EndpointView
from tritonmix.controller.plugins import build_scorers
from tritonmix.controller.policy import PlanSettings, make_plan
from tritonmix.controller.queueing import QUEUE_MISS_TARGET, erlang_c, inflight_limit, slo_utilisation
from tritonmix.controller.simulation import ServerModel, Simulation
from tritonmix.fleet import Fleet


def waits_over(c: int, rho: float, slack_over_s: float, n: int = 30000, seed: int = 1) -> float:
    """Share of arrivals to c FIFO slots (service 1 +- 5%, Poisson at rho c) that wait longer than the slack."""
    rnd = random.Random(seed)
    free = [0.0] * c
    t, over = 0.0, 0
    for _ in range(n):
        t += rnd.expovariate(rho * c)
        start = max(t, heapq.heappop(free))
        over += start - t > slack_over_s
        heapq.heappush(free, start + max(0.0, rnd.gauss(1.0, 0.05)))
    return over / n


def test_erlang_c_known_values():
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)  # textbook: c = 2, a = 1
    assert erlang_c(3, 2.0) == pytest.approx(4.0 / 9.0)  # c = 3, a = 2: B = 4/19, C = B / (1 - rho + rho B)
    assert erlang_c(3, 0.0) == 0.0 and erlang_c(3, 3.0) == 1.0


def test_slo_utilisation_shape():
    ratios = [0.1, 0.2, 0.3, 0.45, 0.6]
    for c in (1, 2, 4, 16):
        us = [slo_utilisation(c, r, 1.0) for r in ratios]
        assert all(a > b for a, b in zip(us, us[1:])), (c, us)  # a longer service time leaves less slack
    for r in ratios:
        us = [slo_utilisation(c, r, 1.0) for c in (1, 2, 4, 16)]
        assert all(a < b for a, b in zip(us, us[1:])), (r, us)  # more slots queue less
    assert slo_utilisation(3, math.nan, 0.6) == 1.0 and slo_utilisation(0, 0.1, 0.6) == 1.0
    assert slo_utilisation(3, 0.1, math.nan) == 1.0 and slo_utilisation(3, 0.1, 0.0) == 1.0
    assert slo_utilisation(3, 0.6, 0.6) == 0.0 and slo_utilisation(3, 0.9, 0.6) == 0.0


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("ratio", [0.2, 0.4])
def test_the_safe_load_holds_in_simulation(c: int, ratio: float):
    u = slo_utilisation(c, ratio, 1.0)
    slack = (1.0 - ratio) / ratio
    at_u = waits_over(c, u, slack)
    assert at_u <= QUEUE_MISS_TARGET + 0.01, (c, ratio, u, at_u)
    hotter = waits_over(c, min(1.0, u + 0.15), slack)
    assert hotter > max(at_u, 0.01), (c, ratio, u, at_u, hotter)


def test_inflight_limit():
    # 3 slots, 0.1675 s, SLO 0.6 s: a request finding 9 in flight answers in s + 7 s / 3 = 0.56 s <= 0.9 x SLO
    assert inflight_limit(3, 0.1675, 0.6) == 9
    assert inflight_limit(1, 0.1675, 0.6) == 3
    assert inflight_limit(1.6, 0.1675, 0.6) == 5  # a learnt (fractional) slot count after a cut
    assert inflight_limit(1, 0.5, 0.6) == 1  # one slot barely within the SLO: one at a time
    assert inflight_limit(3, math.nan, 0.6) == 0 and inflight_limit(3, 0.58, 0.6) == 0  # unknown / hopeless


def view(i: int, mu: float, service_s: float, slots: float, slo_s: float) -> EndpointView:
    return EndpointView(i, f"e{i}", "neuron", 1.0, mu, service_s, True, True, 0.0, "on-demand", slots / service_s,
                        slo_utilisation(slots, service_s, slo_s))


def test_cost_mode_plans_a_one_slot_endpoint_no_hotter_than_its_safe_load():
    """Same pool, same price (one tier: load spread by room), same service time; 1 slot vs 3. At a demand that
    fills the tier's SLO-safe room the one-slot endpoint is planned at its u_slo x mu, not at 80% of mu (where the
    room-proportional spread without u_slo would have put ~4.4 of its 6 req/s)."""
    slo_s = 0.6
    views = [view(0, 1 / 0.1675, 0.1675, 1, slo_s), view(1, 3 / 0.1675, 0.1675, 3, slo_s)]
    one_safe = views[0].slo_utilisation * views[0].mu_rps
    assert views[0].slo_utilisation < 0.8 <= views[1].slo_utilisation  # the bound binds on the one slot only
    demand = sum(v.safe_room_rps(0.8) for v in views)
    plan = make_plan(views, COST, demand, 0.0, build_scorers(["cost"]), (), PlanSettings(0.8, 0.0))
    one = plan.interactive_rps[0]
    assert 0.99 * one_safe <= one <= one_safe + 1e-9, (one, one_safe)
    assert plan.interactive_rps[1] == pytest.approx(0.8 * views[1].mu_rps)
    assert sum(plan.interactive_rps) == pytest.approx(demand)
    old = demand * 0.8 * views[0].mu_rps / (0.8 * (views[0].mu_rps + views[1].mu_rps))  # spread by 0.8 x mu
    assert one < old - 0.5, (one, old)


@pytest.mark.parametrize("picker, low, high", [("tiered_fill", 12, 18), ("cheapest_first", 8, 12)])
def test_the_controller_pushes_in_flight_limits_to_interactive_dispatchers(picker, low, high):
    eps = [{"name": f"e{k}", "url": f"127.0.0.1:{9000 + k}", "accelerator": "neuron", "price_per_hour": 1.0,
            "max_rps": 30.0, "max_concurrency": 3} for k in range(2)]
    fleet = Fleet.from_dict({"endpoints": eps, "slo_ms": 600,
                             "controller": {"interval_s": 0.5, "cost_picker": picker}})
    sim = Simulation.build(fleet, [ServerModel(0.1, concurrency=3)] * 2, seed=3, jitter=0.0)
    sim.run(3.0, {("sd", INTERACTIVE): 10.0})
    limits = sim.router.dispatcher("sd", INTERACTIVE).limits()
    # s ~ 0.1 s, 3 slots, SLO 0.6 s: floor(3 x 0.9 x 0.6 / 0.1) = 16 with tiered_fill's limits at 0.9 of the SLO,
    # floor(3 x 0.6 x 0.6 / 0.1) = 10 with cheapest_first's at 0.6 (the learnt s moves them a little)
    assert all(low <= x <= high for x in limits), limits
