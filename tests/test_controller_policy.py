"""The pure policy over plain data: allocation per mode and class, AUTO hysteresis, ejection, panic, estimators."""
from __future__ import annotations

import math

import pytest

from tritonmix.controller.estimators import CapacityEstimator, CapacityObservation, DemandEstimator
from tritonmix.controller.model import CAPACITY, COST, EndpointView
from tritonmix.controller.plugins import build_filters, build_scorers, register_scorer
from tritonmix.controller.policy import (AutoMode, OutlierDetector, PlanSettings, RoomMedian, detect_shortfall,
                                        make_plan)
from tritonmix.controller.policy.batch import allocate_batch
from tritonmix.request.ejection import in_panic
from tritonmix.errors import ConfigError
from tritonmix.settings import ControllerSettings


def view(i: int, pool: str, price: float, mu: float, latency_s: float = 0.07, healthy: bool = True,
         meets_slo: bool = True, external: float = 0.0) -> EndpointView:
    return EndpointView(i, f"{pool}-{i}", pool, price, mu, latency_s, healthy, meets_slo, external)


def fleet():  # two cheap slow endpoints, two expensive fast ones
    return (view(0, "inf2", 0.76, 15.0), view(1, "inf2", 0.76, 15.0),
            view(2, "trn1", 1.34, 20.0, 0.05), view(3, "trn1", 1.34, 20.0, 0.05))


def plan(views, mode=COST, interactive=10.0, batch=0.0, probe=0.0):
    return make_plan(views, mode, interactive, batch, build_scorers(()), (), PlanSettings(0.8, probe))


def test_cost_fills_the_cheap_tier_first_and_spreads_within_it():
    p = plan(fleet(), interactive=10.0)
    assert p.interactive_rps[:2] == pytest.approx((5.0, 5.0))
    assert p.interactive_rps[2:] == (0.0, 0.0)


def test_cost_overflows_to_the_next_tier_at_target_utilisation():
    p = plan(fleet(), interactive=30.0)  # cheap tier holds 0.8 x 30 = 24
    assert sum(p.interactive_rps[:2]) == pytest.approx(24.0)
    assert sum(p.interactive_rps[2:]) == pytest.approx(6.0)


def test_cost_beyond_every_target_spreads_by_remaining_room():
    p = plan(fleet(), interactive=64.0)  # targets hold 56; 8 more over the 14 of room left
    assert sum(p.interactive_rps) == pytest.approx(64.0)
    assert all(a <= v.mu_rps + 1e-9 for a, v in zip(p.interactive_rps, fleet()))


def test_capacity_spreads_in_proportion_to_headroom():
    views = fleet()[:3] + (view(3, "trn1", 1.34, 20.0, 0.05, external=10.0),)
    p = plan(views, mode=CAPACITY, interactive=10.0)
    assert p.interactive_weights == pytest.approx((15 / 60, 15 / 60, 20 / 60, 10 / 60))


def test_interactive_never_goes_where_the_slo_cannot_be_met_while_others_have_room():
    views = fleet() + (view(4, "cpu", 0.1, 5.0, latency_s=20.0, meets_slo=False),)
    assert plan(views, interactive=40.0).interactive_rps[4] == 0.0
    assert plan(views, mode=CAPACITY, interactive=40.0).interactive_rps[4] == 0.0
    # CAPACITY just past the accelerators' headroom (70): the CPU takes the excess only, not a share of all
    spread = plan(views, mode=CAPACITY, interactive=72.0).interactive_rps
    assert spread[4] == pytest.approx(2.0) and sum(spread) == pytest.approx(72.0)
    assert plan(views, mode=CAPACITY, interactive=90.0).interactive_rps[4] == pytest.approx(5.0)  # full; rest queues
    assert plan(views, interactive=200.0).interactive_rps[4] > 0.0  # every eligible endpoint is full


def test_batch_is_cost_first_and_never_displaces_interactive():
    views = fleet() + (view(4, "cpu", 0.05, 1.0, latency_s=2.0, meets_slo=False),)  # cheapest per inference
    p = plan(views, interactive=20.0, batch=0.5)
    assert p.batch_rps[4] == pytest.approx(0.5)       # the cheapest, SLO or not
    q = plan(fleet(), interactive=24.0, batch=10.0)   # interactive fills the cheap tier's target
    assert q.interactive_rps[:2] == pytest.approx((12.0, 12.0))
    assert sum(q.batch_rps[:2]) == pytest.approx(0.0)  # batch goes to the room left: the next tier


def test_unhealthy_endpoints_get_no_weight_and_probes_keep_idle_ones_measured():
    views = (view(0, "inf2", 0.76, 15.0, healthy=False),) + fleet()[1:]
    p = plan(views, interactive=5.0, probe=0.02)
    assert p.interactive_weights[0] == 0.0
    assert p.interactive_weights[1] == pytest.approx(0.98)
    assert p.interactive_weights[2] == pytest.approx(0.01)


def test_shortfall_thresholds_and_hysteresis_band():
    kw = dict(cost_margin=0.9, hysteresis=0.1, slo_miss_threshold=0.05)
    assert detect_shortfall(91.0, 100.0, 0.0, 0.0, (), **kw).reasons == ("demand",)
    between = detect_shortfall(85.0, 100.0, 0.0, 0.0, (), **kw)
    assert between.reasons == () and not between.clear
    assert detect_shortfall(79.0, 100.0, 0.0, 0.0, (), **kw).clear
    assert detect_shortfall(10.0, 100.0, math.nan, math.nan, ("down:a",), **kw).reasons == ("down:a",)


def test_auto_switches_on_shortfall_and_returns_only_after_the_dwell():
    kw = dict(cost_margin=0.9, hysteresis=0.1, slo_miss_threshold=0.05)
    auto = AutoMode("auto", dwell_s=5.0, hysteresis=0.1)
    assert auto.update(0.0, detect_shortfall(10.0, 100.0, 0.0, 0.0, ("down:a",), **kw)).new == CAPACITY
    t = 0.5
    while t < 5.4:
        assert auto.update(t, detect_shortfall(10.0, 100.0, 0.0, 0.0, (), **kw)) is None
        t += 0.5
    assert auto.update(5.5, detect_shortfall(10.0, 100.0, 0.0, 0.0, (), **kw)).new == COST


def test_auto_does_not_return_to_cost_at_the_load_where_cost_failed():
    kw = dict(cost_margin=0.9, hysteresis=0.1, slo_miss_threshold=0.05)
    auto = AutoMode("auto", dwell_s=5.0, hysteresis=0.1)  # lambda_fail is remembered for 20 dwell times
    auto.update(0.0, detect_shortfall(50.0, 100.0, 0.2, 0.0, (), **kw))
    assert auto.update(0.5, detect_shortfall(50.0, 100.0, 0.2, 0.0, (), **kw)).new == CAPACITY  # 2 ticks of misses
    for k in range(1, 180):  # misses gone in CAPACITY, same load: stays
        assert auto.update(0.5 + k * 0.5, detect_shortfall(50.0, 100.0, 0.0, 0.0, (), **kw)) is None
    assert auto.update(90.5, detect_shortfall(50.0, 100.0, 0.0, 0.0, (), **kw), capacity_grew=True) is None
    assert auto.update(95.5, detect_shortfall(50.0, 100.0, 0.0, 0.0, (), **kw)).new == COST


def test_fixed_modes_never_switch():
    kw = dict(cost_margin=0.9, hysteresis=0.1, slo_miss_threshold=0.05)
    auto = AutoMode("cost")
    assert auto.update(0.0, detect_shortfall(500.0, 100.0, 0.5, 0.5, ("down:a",), **kw)) is None
    assert auto.mode == COST and AutoMode("capacity").mode == CAPACITY


def test_ejection_backoff_grows_and_resets_after_a_quiet_period():
    det = OutlierDetector(4, consecutive_failures=3, base_s=2.0, max_s=60.0, max_share=0.5)
    ok, bad = [5, 5, 5, 5], [0, 0, 0, 0]
    durations = []
    t = 0.0
    for _ in range(4):
        events = det.update(t, [0, 5, 5, 5], [3, 0, 0, 0], [0.1] * 4, ["p"] * 4)
        eject = [e for e in events if e.kind == "eject"][0]
        durations.append(eject.figures["backoff_s"])
        t = det.until[0]
        assert [e.kind for e in det.update(t, ok, bad, [0.1] * 4, ["p"] * 4)] == ["readmit"]
    assert durations == [2.0, 4.0, 8.0, 16.0]
    det.update(t + 61.0, [0, 5, 5, 5], [3, 0, 0, 0], [0.1] * 4, ["p"] * 4)
    assert det.ejections[0] == 1


def test_latency_outlier_and_max_ejected_share():
    det = OutlierDetector(4, base_s=2.0, max_share=0.25, latency_factor=3.0, slo_s=0.2)
    events = det.update(0.0, [1, 1, 1, 1], [0] * 4, [0.07, 0.07, 0.07, 0.5], ["p"] * 4)
    assert [(e.kind, e.index, e.reason) for e in events] == [("eject", 3, "latency outlier")]
    events = det.update(0.5, [0, 1, 1, 1], [3, 0, 0, 0], [0.07] * 4, ["p"] * 4)
    assert [(e.kind, e.index) for e in events] == [("eject_refused", 0)]
    assert det.update(1.0, [0, 1, 1, 1], [3, 0, 0, 0], [0.07] * 4, ["p"] * 4) == []  # logged once per episode
    assert det.ejected_count == 1


def test_panic_threshold():
    assert in_panic(2, 10, 0.3) and not in_panic(3, 10, 0.3) and not in_panic(0, 0, 0.3)


def test_capacity_estimate_shows_a_halving_within_two_intervals():
    est = CapacityEstimator(15.0, 1, slo_s=0.15, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    est.update(CapacityObservation(0.5, completed=5, service_s=1 / 15.0))
    assert est.mu_rps == pytest.approx(15.0)
    est.update(CapacityObservation(0.5, completed=4, service_s=1.2 / 15.0))  # +20%: an EWMA step (alpha_down)
    assert est.mu_rps == pytest.approx(15.0 + 0.6 * (12.5 - 15.0))
    est.update(CapacityObservation(0.5, completed=4, service_s=2 / 15.0))
    est.update(CapacityObservation(0.5, completed=4, service_s=2 / 15.0))
    assert est.mu_rps < 7.5 * 1.2  # 84% of the cut shows after two ticks
    est.update(CapacityObservation(0.5))  # nothing measured: kept
    assert est.mu_rps < 9.0


def test_the_tick_s_inlined_reads_equal_the_properties_they_stand_for():
    """The tick reads the estimators column-wise (CapacityEstimator.columns) and allocate_batch computes rooms
    inline, to save a call per endpoint: both must equal the properties (meets_slo, rated_rps, room_rps,
    safe_room_rps) in every state, NaN service time and a service time over the SLO included."""
    fresh = CapacityEstimator(10.0, 2, slo_s=0.2, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    fast = CapacityEstimator(10.0, 2, slo_s=0.2, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    fast.update(CapacityObservation(0.5, completed=5, service_s=0.1))
    slow = CapacityEstimator(10.0, 2, slo_s=0.2, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    slow.update(CapacityObservation(0.5, completed=2, service_s=0.5))
    estimators = [fresh, fast, slow]
    slots, service, mu, meets, rated = CapacityEstimator.columns(estimators)
    assert slots == [e.concurrency for e in estimators] and mu == [e.mu_rps for e in estimators]
    assert [s == e.service_s or (math.isnan(s) and math.isnan(e.service_s)) for s, e in zip(service, estimators)] \
        == [True] * 3
    assert meets == [e.meets_slo for e in estimators] == [True, True, False]
    assert [r == e.rated_rps or (math.isnan(r) and math.isnan(e.rated_rps)) for r, e in zip(rated, estimators)] \
        == [True] * 3

    views = [EndpointView(i, f"e{i}", "gpu", price, mu_rps=m, latency_s=0.1, healthy=True, meets_slo=True,
                          external_rps=ext, slo_utilisation=u)
             for i, (price, m, ext, u) in enumerate([(1.0, 10.0, 2.0, 0.5), (2.0, 10.0, 0.0, 0.9),
                                                      (3.0, 5.0, 6.0, 1.0)])]
    interactive = [1.0, 0.0, 0.0]
    rooms = [max(0.0, (v.safe_room_rps(0.8) if x > 0.0 else v.room_rps(0.8)) - x) for v, x in zip(views, interactive)]
    assert rooms == [pytest.approx(2.0), pytest.approx(8.0), 0.0]
    assert allocate_batch(views, sum(rooms), [0, 1, 2], interactive, 0.8) == pytest.approx(rooms)


def test_a_service_time_jump_is_believed_at_once():
    """A slow-down (or requests held inside the server for a slot) shows as a service time >= 1.5 x the last: mu
    follows on that tick, so the spill starts then."""
    est = CapacityEstimator(17.9, 3, slo_s=0.6, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    est.update(CapacityObservation(0.25, completed=4, service_s=0.1675))
    est.update(CapacityObservation(0.25, completed=2, service_s=0.5))
    assert est.mu_rps == pytest.approx(3 / 0.5)
    est.update(CapacityObservation(0.25, completed=3, service_s=0.17))  # good news: trusted slowly (alpha_up)
    assert est.mu_rps == pytest.approx(6.0 + 0.3 * (3 / 0.17 - 6.0))


def test_a_cut_concurrency_is_probed_back_up_while_the_endpoint_serves_without_a_queue():
    """inf2 of the scenario cut to 1 slot of 3 (the queue shows it), then given its slots back: each tick that
    serves requests without any queue adds half a slot, so C is back at 3 after four such ticks (1 s at 0.25 s
    ticks), where the old exponential re-trust (time constant 2.5 s) had it at ~1.6. A tick that queues cuts it
    again; an idle tick re-trusts it slowly."""
    est = CapacityEstimator(17.9, 3, slo_s=0.6, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    for _ in range(3):  # 1 slot busy, a queue: C_obs = x s = 6 x 0.1675 = 1.0
        est.update(CapacityObservation(0.25, completed=1.5, service_s=0.1675, queue_s=0.3, pending=2.0,
                                       in_flight=4, ours_completed=1))
    assert est.concurrency < 1.2
    served = CapacityObservation(0.25, completed=2, service_s=0.1675, queue_s=0.0, pending=0.0, in_flight=2,
                                 ours_completed=2)
    seen = []
    for _ in range(5):
        est.update(served)
        seen.append(round(est.concurrency, 2))
    assert seen[3] == pytest.approx(3.0, abs=0.2) and seen[4] == 3.0, seen
    est.update(CapacityObservation(0.25, completed=2, service_s=0.1675, queue_s=0.3, pending=3.0, in_flight=5,
                                   ours_completed=2))
    assert est.concurrency < 2.0  # the queue is back: cut again (2 x 4 x 0.1675 = 1.3 slots)


def test_capacity_estimate_takes_a_larger_pool_only_from_two_queueing_ticks():
    """3 slots of 0.1675 s (inf2 in the scenario). One short tick whose answers burst (the slots that were busy when
    a cut parked them) looks like 3.8 slots: ignored. The same on two ticks in a row is a larger pool. A smaller pool
    shows at once."""
    def queued(completed: int) -> CapacityObservation:  # 0.125 s ticks, a queue at the server
        return CapacityObservation(0.125, completed=completed, service_s=0.1675, queue_s=0.2, pending=2.0, in_flight=5,
                                   ours_completed=completed)

    est = CapacityEstimator(17.9, 3, slo_s=0.6, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    est.update(queued(3))  # x s = 24 x 0.1675 = 4.0 slots
    assert est.concurrency == pytest.approx(3.0)
    est.update(CapacityObservation(0.125, completed=2, service_s=0.1675, queue_s=0.0, pending=0.0, in_flight=2,
                                   ours_completed=2))
    est.update(queued(3))  # a tick without a queue between: not two in a row
    assert est.concurrency == pytest.approx(3.0)
    est.update(queued(3))
    assert est.concurrency > 3.5
    cut = CapacityEstimator(17.9, 3, slo_s=0.6, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    cut.update(queued(1))  # 8 x 0.1675 = 1.3 slots
    assert cut.concurrency < 2.0


def test_capacity_estimate_learns_the_slo_factor_from_misses():
    est = CapacityEstimator(15.0, 1, slo_s=0.15, slo_miss_threshold=0.05, alpha_down=1.0, alpha_up=1.0)
    est.update(CapacityObservation(0.5, completed=6, service_s=1 / 15.0, ours_completed=6, ours_over_slo=3))
    assert est.slo_factor == pytest.approx(0.8) and est.mu_rps == pytest.approx(12.0)


def test_demand_estimator_counts_arrivals_over_a_window_of_ticks():
    dem = DemandEstimator(0.5)  # at least round(2 / 0.5 - 1) = 3 ticks, up to 12 while it holds < 32 arrivals
    dem.update({("m", "interactive"): 10}, 1.0)
    dem.update({("m", "interactive"): 30, ("m", "batch"): 4}, 1.0)
    assert dem.rates[("m", "interactive")] == pytest.approx(15.0)  # the two ticks there are
    assert dem.rates[("m", "batch")] == pytest.approx(4.0)  # counted from its first tick
    dem.update({("m", "interactive"): 70}, 1.0)
    dem.update({("m", "interactive"): 130}, 1.0)
    assert dem.rates[("m", "interactive")] == pytest.approx(40.0)  # the newest 3 ticks: 120 arrivals in 3 s
    fast = DemandEstimator(0.3)  # 6 ticks at least; 1.6 arrivals a tick: widened until it holds 32, at most 24
    for k in range(1, 41):
        fast.update({"k": 16 * k // 10}, 0.1)
    assert fast.rates["k"] == pytest.approx(16.0, abs=0.6)


def test_a_demand_shortfall_must_be_sustained_and_noise_about_the_threshold_does_not_add_up() -> None:
    auto = AutoMode("auto", dwell_s=0.5, hysteresis=0.1)
    _settle(auto, _shortfall(10.0, 20.0, rated=20.0), until=0.0)
    # lambda alternates 20% over and 25% under the enter threshold (18): no switch, however long
    noisy = [auto.update(0.1 * k, _shortfall(21.6 if k % 2 else 13.5, 20.0, rated=20.0)) for k in range(100)]
    assert [c for c in noisy if c] == [] and auto.mode == COST
    assert auto.update(9.9, _shortfall(10.0, 20.0, rated=20.0)) is None
    # 10% over on three ticks in a row: a shortfall on the third
    over = [auto.update(10.0 + 0.1 * k, _shortfall(19.8, 20.0, rated=20.0)) for k in range(3)]
    assert over[:2] == [None, None] and over[2].new == CAPACITY and over[2].reasons == ("demand",)
    # an empty cheap set with demand: at once
    empty = AutoMode("auto", dwell_s=0.5, hysteresis=0.1)
    assert empty.update(0.0, _shortfall(5.0, 0.0)).new == CAPACITY


def test_the_room_auto_judges_is_the_median_of_the_last_ticks() -> None:
    rooms = RoomMedian(5)
    assert [rooms.update("m", r) for r in (20.0, 13.0, 21.0, 20.0, 12.0)] == [20.0, 16.5, 20.0, 20.0, 20.0]
    assert [rooms.update("m", r) for r in (10.0, 10.0, 10.0)] == [13.0, 12.0, 10.0]  # a lasting cut: the third tick
    assert rooms.update(None, 7.0) == 7.0  # per model


def test_scorer_registry_refuses_duplicates_and_names_unknown_ones():
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("cost")(object)
    with pytest.raises(ConfigError, match="controller.scorers"):
        build_scorers(["nope"])
    with pytest.raises(ConfigError, match="controller.filters"):
        build_filters(["nope"])
    assert [s.weight for s in build_scorers(["cost", "latency:0.25"])] == [1.0, 0.25]


def test_settings_validate_new_fields_by_name():
    s = ControllerSettings.from_dict({"hysteresis": 0, "probe_share": 0.0, "metrics_host": "0.0.0.0"})
    assert s.hysteresis == 0.0 and s.metrics_host == "0.0.0.0"
    with pytest.raises(ConfigError, match="controller.capacity_alpha_down"):
        ControllerSettings.from_dict({"capacity_alpha_down": 0})
    with pytest.raises(ConfigError, match="controller.hysteresis"):
        ControllerSettings.from_dict({"hysteresis": 1.5})


def _shortfall(demand: float, room: float, rated: float = math.nan, known: bool = True, misses: float = math.nan):
    return detect_shortfall(demand, room, misses, math.nan, (), cost_margin=0.9, hysteresis=0.1,
                            slo_miss_threshold=0.05, capacity_known=known, rated_capacity_rps=rated)


def test_auto_judges_no_demand_shortfall_before_capacity_is_known() -> None:
    assert _shortfall(4.0, 0.0, known=False).reasons == () and _shortfall(4.0, 0.0, known=False).clear
    assert _shortfall(4.0, 0.0).reasons == ("demand",)
    auto = AutoMode("auto", dwell_s=1.0)
    assert all(auto.update(t / 4, _shortfall(4.0, 0.0, known=False)) is None for t in range(8))
    assert auto.mode == COST and auto.fail_demand_rps is None


def test_auto_keeps_a_load_driven_failure_while_capacity_mode_inflates_the_estimated_room() -> None:
    """The old rule forgot lambda_fail once K > 1.25 x K at the failure; in CAPACITY mode K grows by itself."""
    auto = AutoMode("auto", dwell_s=5.0, hysteresis=0.1)
    _settle(auto, _shortfall(30.0, 52.0, rated=60.0), until=-2.0)  # the estimate has been known for a dwell
    # 7% over the enter threshold (0.9 x 52): a demand shortfall once sustained, on the fifth tick
    switched = [auto.update(-2.0 + 0.5 * k, _shortfall(50.0, 52.0, rated=60.0)) for k in range(5)]
    assert switched[:4] == [None] * 4 and switched[4].new == CAPACITY
    changes = [auto.update(0.5 * k, _shortfall(50.0, 80.0, rated=61.0)) for k in range(1, 120)]  # 60 s
    assert [c for c in changes if c] == [] and auto.fail_demand_rps == pytest.approx(50.0)
    # the service times fell (rated room +33%): evidence, forgotten; COST after the dwell
    changes = [auto.update(60.0 + 0.5 * k, _shortfall(50.0, 80.0, rated=80.0)) for k in range(0, 12)]
    assert [(c.new, c.at_s) for c in changes if c] == [(COST, 65.0)]


def test_a_registered_picker_decides_the_load_and_an_unknown_one_is_named() -> None:
    from tritonmix.controller.decider import Decider
    from tritonmix.controller.decisions import DecisionLog
    from tritonmix.controller.plugins import build_picker, picker_names, register_picker

    @register_picker("all_on_first_eligible")
    class FirstEligible:
        def allocate(self, views, demand_rps, order, eligible, fallback, utilisation):  # type: ignore[no-untyped-def]
            out = [0.0] * len(views)
            out[eligible[0]] = demand_rps
            return out

    assert {"tiered_fill", "headroom_spread", "all_on_first_eligible"} <= set(picker_names())
    views = fleet()
    pickers = (build_picker("all_on_first_eligible", "cost_picker"), build_picker("headroom_spread", "x"))
    chosen = make_plan(views, COST, 5.0, 0.0, build_scorers(()), (), PlanSettings(0.8, 0.0), pickers=pickers)
    assert chosen.interactive_rps == (5.0, 0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="controller.cost_picker: unknown picker 'nope'"):
        Decider(ControllerSettings.from_dict({"cost_picker": "nope"}), "auto", 1.0, ("a",), DecisionLog())


def test_auto_does_not_stick_in_capacity_after_a_switch_on_an_unsettled_estimate() -> None:
    """Steady load inside COST's range: at start-up the estimated room K (8) is far below the rated room (56), so the
    demand switch is tentative and COST returns once the settled K holds the load for the dwell; a second demand
    switch within memory_s is a load-driven failure again and stays."""
    auto = AutoMode("auto", dwell_s=0.5, hysteresis=0.1)
    _settle(auto, _shortfall(4.0, 8.0, rated=56.0), until=1.0)
    first = auto.update(1.0, _shortfall(20.0, 8.0, rated=56.0))
    assert first.new == CAPACITY and auto.tentative and "tentative" in first.reasons[-1]
    changes = [auto.update(1.0 + 0.1 * k, _shortfall(19.0, 30.0, rated=56.0)) for k in range(1, 20)]
    assert [(c.new, round(c.at_s, 1)) for c in changes if c] == [(COST, 1.6)] and not auto.tentative
    assert all(auto.update(3.0 + 0.1 * k, _shortfall(19.0, 30.0, rated=56.0)) is None for k in range(50))
    again = auto.update(9.0, _shortfall(20.0, 8.0, rated=56.0))
    assert again.new == CAPACITY and not auto.tentative  # within memory_s (20 dwells): kept as a failure
    assert all(auto.update(9.0 + 0.1 * k, _shortfall(19.0, 30.0, rated=56.0)) is None for k in range(1, 60))


def _settle(auto: AutoMode, quiet, until: float) -> None:
    """Ticks of a known capacity and no shortfall for two dwells before ``until``."""
    for k in range(20, 0, -1):
        assert auto.update(until - k * auto.dwell_s / 10, quiet) is None


def test_a_demand_switch_with_misses_or_a_settled_estimate_is_not_tentative() -> None:
    auto = AutoMode("auto", dwell_s=0.5, hysteresis=0.1)
    assert auto.update(0.0, _shortfall(20.0, 8.0, misses=0.2, rated=56.0)).new == CAPACITY and not auto.tentative
    settled = AutoMode("auto", dwell_s=0.5, hysteresis=0.1)
    _settle(settled, _shortfall(10.0, 20.0, rated=30.0), until=0.0)
    assert settled.update(0.0, _shortfall(24.0, 20.0, rated=30.0)).new == CAPACITY and not settled.tentative
    unrated = AutoMode("auto", dwell_s=0.5, hysteresis=0.1)
    _settle(unrated, _shortfall(4.0, 8.0), until=0.0)
    assert unrated.update(0.0, _shortfall(20.0, 8.0)).new == CAPACITY and not unrated.tentative


def test_cheapest_first_routes_the_plans_load_as_a_priority_that_the_limits_spill() -> None:
    """``cheapest_first``: the plan's load as tiered_fill places it (what the plan reports), weights that rank the
    tiers (PRIORITY_DECAY each step), so that the dispatcher fills the cheap tier up to its in-flight limits and
    overflows to the next (a random split in proportion to the load sends requests to the dear tier while the cheap
    one has room); left alone in CAPACITY mode and where a loaded endpoint has no limit (it would never overflow)."""
    from tritonmix.controller.decider import PRIORITY_DECAY, Decider, Facts
    from tritonmix.controller.decisions import DecisionLog
    from tritonmix.controller.plan import ModelRoute
    from tritonmix.dispatch_core import Dispatcher

    views = fleet()
    settings = ControllerSettings.from_dict({"cost_picker": "cheapest_first", "probe_share": 0.0})
    decider = Decider(settings, "cost", 1.0, tuple(v.name for v in views), DecisionLog())
    facts = Facts(ticks=(), events=(), rates={}, measured={}, slots={}, available=(True,) * 4, panic=False,
                  capacity_grew=False)
    loaded = make_plan(views, COST, 30.0, 0.0, build_scorers(()), (), PlanSettings(0.8, 0.0))
    assert loaded.interactive_rps[0] > 0 and loaded.interactive_rps[2] > 0  # the cheap tier's room is 24 req/s
    route = decider._priority(views, ModelRoute(loaded, (9, 9, 9, 9)), facts, (4, 4, 3, 3))
    w = route.plan.interactive_weights
    assert route.plan.interactive_rps == loaded.interactive_rps and route.limits == (4, 4, 3, 3)
    assert route.proportional == ModelRoute(loaded, (9, 9, 9, 9))  # what a gateway routes (Plan.proportional)
    assert w[0] == pytest.approx(w[1]) and w[2] == pytest.approx(w[3])
    assert (w[2] + w[3]) / (w[0] + w[1]) == pytest.approx(PRIORITY_DECAY) and sum(w) == pytest.approx(1.0)
    unlimited = ModelRoute(loaded, (9, 9, 9, 9))
    assert decider._priority(views, unlimited, facts, (4, 0, 3, 3)) is unlimited  # one without a limit: as it was
    assert unlimited.proportional is None
    spread = make_plan(views, CAPACITY, 30.0, 0.0, build_scorers(()), (), PlanSettings(0.8, 0.0))
    assert decider._priority(views, ModelRoute(spread, (9, 9, 9, 9)), facts, (4, 4, 3, 3)).plan is spread
    probed = make_plan(views, COST, 5.0, 0.0, build_scorers(()), (), PlanSettings(0.8, 0.02))  # trn1 probed
    w = decider._priority(views, ModelRoute(probed, (9, 9, 9, 9)), facts, (4, 4, 3, 3)).plan.interactive_weights
    assert w[2] == w[3] == pytest.approx(0.01) and w[0] + w[1] == pytest.approx(0.98)

    # the dispatcher: 8 requests held in flight go to inf2 (limits 4 + 4) but for the odd idle trn1 drawn as a
    # candidate; the next ones, inf2 full, all overflow to trn1
    first, spill = [], []
    for seed in range(200):
        d = Dispatcher(4, seed=seed)
        d.set_weights(route.plan.interactive_weights)
        d.set_limits(route.limits)
        picks = [d.pick() for _ in range(10)]
        first += picks[:8]
        if picks[:8].count(0) + picks[:8].count(1) == 8:
            spill += picks[8:]
    assert sum(i in (0, 1) for i in first) / len(first) >= 0.97
    assert spill and set(spill) <= {2, 3}


def test_failed_attempts_of_a_down_or_ejected_endpoint_are_its_event_not_fleet_wide_errors():
    """A frozen endpoint's held attempts, cancelled and sent elsewhere, fail by the handful on every tick until it
    is ejected and after. Once it is out (not routable), they are its ejection's, which AUTO judges by the room the
    others leave (10 req/s here, well inside it): no ``errors`` shortfall. The same failures at an endpoint still
    routable are the fleet failing requests: CAPACITY."""
    from tritonmix.controller.decider import Decider, Facts
    from tritonmix.controller.decisions import DecisionLog
    from tritonmix.controller.deltas import EndpointTick
    from tritonmix.controller.model import INTERACTIVE

    def mode_after(available):
        views = tuple(v._replace(healthy=up) for v, up in zip(fleet(), available))
        log = DecisionLog()
        decider = Decider(ControllerSettings.from_dict({"dwell_s": 1.0}), "auto", 1.0,
                          tuple(v.name for v in views), log)
        for k in range(8):  # inf2-0: 3 failed attempts a tick beside 40 answers (7% of the attempts)
            ticks = [EndpointTick(10, 0, 3 if i == 0 else 0, 0, 0.07, CapacityObservation(0.5), 0.0, 0.0, up)
                     for i, up in enumerate(available)]
            facts = Facts(ticks=ticks, events=(), rates={("sd", INTERACTIVE): 10.0}, measured={"sd": [True] * 4},
                          slots={}, available=available, panic=False, capacity_grew=False)
            decider.decide(0.5 * k, {"sd": views}, facts)
        return decider.auto.mode, [d.summary for d in log.items("mode")]

    assert mode_after((False, True, True, True)) == (COST, [])
    mode, switches = mode_after((True, True, True, True))
    assert mode == CAPACITY and switches == ["mode cost -> capacity: errors"]


def test_a_tick_that_completed_nothing_counts_towards_the_queue_seen_on_two_ticks():
    """inf2 of the scenario (3 slots of 0.1675 s) cut to one slot: the tick after the cut completes nothing while 6 of
    ours wait; on the next, 2 complete with a short queue wait (they entered before the cut), 5 of ours still in
    flight. Two ticks in a row with >= C + 2 of ours in flight: queueing, and 2 completions in 0.25 s are 1.3 busy
    slots. Counting only the ticks that completed something would wait for a third."""
    est = CapacityEstimator(17.9, 3, slo_s=0.6, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    est.update(CapacityObservation(0.25, completed=0, pending=4.0, in_flight=6))
    assert est.concurrency == 3.0
    est.update(CapacityObservation(0.25, completed=2, service_s=0.166, queue_s=0.075, pending=4.0, in_flight=5,
                                   ours_completed=2))
    assert est.concurrency < 2.0 and est.mu_rps < 12.0, (est.concurrency, est.mu_rps)
    calm = CapacityEstimator(17.9, 3, slo_s=0.6, slo_miss_threshold=0.05, alpha_down=0.6, alpha_up=0.3)
    calm.update(CapacityObservation(0.25, completed=0, pending=0.0, in_flight=2))  # few in flight: no queue
    calm.update(CapacityObservation(0.25, completed=2, service_s=0.166, queue_s=0.075, pending=4.0, in_flight=5,
                                    ours_completed=2))
    assert calm.concurrency == 3.0
