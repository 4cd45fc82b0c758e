"""The scenario replay's pieces that need no server: trace, oracle, load generator, figures, report."""
from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest

from tritonmix.bench.analysis import (cost_per_1k, pending_series, policy_figures, queue_limit, settle_times,
                                     share_series)
from tritonmix.bench.baselines import LeastOutstandingP2C, RoundRobin, StaticWeights, static_weights_for
from tritonmix.bench.loadgen import RequestRecord, replay
from tritonmix.bench.oracle import UnitState, oracle_cost_per_1k, unit_states_at
from tritonmix.bench.report import floor_checks, markdown_table, write_summary
from tritonmix.bench.sampler import Sample
from tritonmix.bench.scenario import FULL, QUICK
from tritonmix.bench.trace import ArrivalTrace, Event, cosine_rate


def test_trace_is_deterministic_and_follows_the_cosine() -> None:
    a, b = QUICK.trace(), QUICK.trace()
    assert a.arrivals_s == b.arrivals_s and len(a.arrivals_s) > 100
    trace = ArrivalTrace.build(200.0, 5.0, 45.0, 200.0, (), seed=3)
    times = np.array(trace.arrivals_s)
    first_tenth = np.sum(times < 20.0) / 20.0  # around the base rate
    middle = np.sum((times >= 90.0) & (times < 110.0)) / 20.0  # around the peak
    assert 4.0 < first_tenth < 12.0 and 38.0 < middle < 52.0
    assert np.isclose(sum(cosine_rate(5, 45, 200)(t) for t in np.arange(0, 200, 0.01)) * 0.01 / len(times), 1.0,
                      rtol=0.05)


def test_bad_event_is_refused() -> None:
    with pytest.raises(ValueError, match="event kind"):
        Event(1.0, "explode", "inf2")


def test_oracle_fills_cheapest_first_and_follows_events() -> None:
    units = [UnitState("cheap", 3.6, 0.1, 1), UnitState("dear", 36.0, 0.1, 10)]  # mu 10 and 100 rps
    flat = ArrivalTrace((), (), 10.0, 4.0, 4.0, 10.0, 0)  # 4 rps < 0.8 x 10: all on cheap
    assert oracle_cost_per_1k(units, flat)["cost_per_1k"] == pytest.approx(1000 * 3.6 / 3600 * 0.1)
    heavy = ArrivalTrace((), (), 10.0, 18.0, 18.0, 10.0, 0)  # 8 on cheap, 10 on dear
    expected = 1000 * (8 * 1e-4 + 10 * 1e-3) / 18
    assert oracle_cost_per_1k(units, heavy)["cost_per_1k"] == pytest.approx(expected)
    killed = unit_states_at(units, [Event(1.0, "kill", "cheap"), Event(2.0, "restart", "cheap")], 1.5)
    assert killed[0].mu_rps == 0
    assert unit_states_at(units, [Event(1.0, "kill", "cheap"), Event(2.0, "restart", "cheap")], 2.5)[0].mu_rps == 10
    slow = unit_states_at(units, [Event(0.0, "slow_down", "dear", 2.0)], 1.0)[1]
    assert slow.latency_s == pytest.approx(0.2) and slow.mu_rps == pytest.approx(50)


def test_replay_is_open_loop_and_records_every_request() -> None:
    arrivals = [0.0, 0.01, 0.02, 0.03]
    calls = []
    lock = threading.Lock()

    def send() -> None:
        with lock:
            calls.append(time.monotonic())
            n = len(calls)
        time.sleep(0.2)  # slow server: open loop must not wait for it
        if n == 2:
            raise ConnectionRefusedError("endpoint gone")

    records = replay(arrivals, send)
    assert len(records) == 4 and [r.arrival_s for r in records] == arrivals
    assert max(calls) - min(calls) < 0.15
    assert sum(not r.ok for r in records) == 1
    assert [r.error for r in records if not r.ok] == ["endpoint gone"]


def test_baseline_pickers() -> None:
    rr = RoundRobin(3)
    assert [rr.pick(set()) for _ in range(4)] == [0, 1, 2, 0]
    assert rr.pick({1}) == 2
    p2c = LeastOutstandingP2C(2, seed=1)
    first = p2c.pick(set())
    assert p2c.pick(set()) != first  # the busier one loses
    static = StaticWeights([0.0, 1.0], seed=0)
    assert {static.pick(set()) for _ in range(20)} == {1}
    with pytest.raises(LookupError):
        static.pick({1})
    assert static_weights_for(["inf2", "cpu"]) == [40.0, 0.0]


def test_figures_cost_and_settling() -> None:
    names = ["a", "b"]
    samples = [Sample(t * 0.25 + 0.25, "a" if t < 8 else "b", 10, 0, 1.0) for t in range(16)]
    assert cost_per_1k(samples, {"a": 3600.0, "b": 7200.0}, 160) == pytest.approx(1000 * (8 + 16) / 160)
    counts = share_series(samples, names, 4.0)
    assert counts.sum() == 160
    records = [RequestRecord(t / 10, 0.05, True) for t in range(40)] + [RequestRecord(2.1, 0.5, True)]
    events = settle_times(counts, [Event(2.0, "kill", "a")], records, slo_s=0.1, duration_s=4.0)
    assert events[0]["settle_s"] is not None and events[0]["settle_s"] <= 0.75
    assert events[0]["recovery_s"] == pytest.approx(0.1)
    fig = policy_figures(records, samples, {"a": 1.0, "b": 1.0}, names, [], 0.1, 4.0)
    assert fig["requests"] == 41 and fig["errors"] == 0 and fig["slo_attainment"] == pytest.approx(40 / 41)


def test_settling_needs_the_cut_pool_within_its_queue_limit() -> None:
    """A cut is settled once the cut endpoint's queue stays within what the SLO absorbs at its new capacity and its
    share has stopped moving; a policy that keeps loading it (its queue only grows) never settles."""
    names = ["a", "b"]
    units = [UnitState("a", 1.0, 0.1, 3), UnitState("b", 1.0, 0.1, 3)]
    cut = [Event(1.0, "set_capacity", "a", 1)]
    assert queue_limit(units[0], 0.3) == 6 and queue_limit(UnitState("a", 1.0, 0.1, 1), 0.3) == 2
    assert queue_limit(UnitState("a", 1.0, 0.4, 1), 0.3) == 0

    def run(queue_a: list) -> float:
        samples = [Sample(b * 0.25, n, 5, 0, 0.5, queue_a[b] if n == "a" else 0.0)
                   for b in range(len(queue_a)) for n in names]
        counts, pending = share_series(samples, names, 4.0), pending_series(samples, names, 4.0)
        return settle_times(counts, cut, [], 0.3, 4.0, names=names, pending=pending, units=units)[0]["settle_s"]

    # the queue's centred 1 s mean: 2.25 in the bin from 1.75 s, 1.25 from 2.0 s on (limit 2 for one slot)
    assert run([0, 0, 0, 0] + [5, 4, 3, 2] + [0] * 8) == 1.0
    assert run([0, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0]) == 0.0  # a one-sample burst is no overload
    assert run([0, 0, 0, 0] + [3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25]) is None  # the queue never drains
    # the emulation's two parking requests wait in the queue for an instance for 1 s after the cut: Triton counts
    # them as pending, the clients' queue (pending less them) is 1-2 requests: settled at once
    parked = [Sample(b * 0.25, n, 5, 0, 0.5, ([0] * 4 + [3, 4, 4, 3] + [1] * 8)[b] if n == "a" else 0.0, None,
                     2.0 if n == "a" and 4 <= b < 8 else 0.0) for b in range(16) for n in names]
    assert [s.queued for s in parked if s.endpoint == "a"][4:9] == [1.0, 2.0, 2.0, 1.0, 1.0]
    counts, pending = share_series(parked, names, 4.0), pending_series(parked, names, 4.0)
    assert settle_times(counts, cut, [], 0.3, 4.0, names=names, pending=pending, units=units)[0]["settle_s"] == 0.0
    assert run([0] * 4 + [3, 4, 4, 3] + [1] * 8) == 1.25  # counted as queue, they held it (centred 1 s means)
    # without the queue, the share of the cut endpoint alone decides: 50% before, 10% from t = 2 s on
    samples = [Sample(b * 0.25, n, (5 if b < 8 else 1) if n == "a" else (5 if b < 8 else 9), 0, 0.5)
               for b in range(17) for n in names]
    settle = settle_times(share_series(samples, names, 4.0), cut, [], 0.3, 4.0, names=names)[0]["settle_s"]
    assert 0.75 <= settle <= 1.25


def test_report_and_floors(tmp_path) -> None:
    event = {"event": "x", "at_s": 1.0, "settle_s": 0.5, "settle_limit_s": 0.74, "recovery_s": 0.0, "return_s": 1.0,
             "return_limit_s": 1.75}
    policy = {"slo_attainment": 0.995, "slo_attainment_worst": 0.985, "errors": 0, "p50_s": 0.1, "p95_s": 0.2,
              "p99_s": 0.3, "cost_per_1k": 0.045, "goodput_cost_per_1k": 0.045, "goodput_vs_floor": 1.1,
              "provisioned_goodput_cost_per_1k": 0.06, "events": [event]}
    summary = {"floor": {"cost_per_1k": 0.041}, "offline_reference": {"cost_per_1k": 0.041, "slo_attainment": 1.0,
                                                                      "goodput_cost_per_1k": 0.041},
               "policies": {"tritonmix-auto": policy,
                            "round-robin": {**policy, "goodput_cost_per_1k": 0.2, "slo_attainment": 0.5,
                                            "provisioned_goodput_cost_per_1k": 0.05}}}
    checks, _ = floor_checks(summary)
    assert all(checks.values()) and len(checks) == 8
    # a policy with more SLO (by > 0.3 points) and a lower goodput cost (by > 2%) takes AUTO off the Pareto front
    summary["policies"]["cheapest"] = {**policy, "slo_attainment": 0.999, "goodput_cost_per_1k": 0.043}
    checks, _ = floor_checks(summary)
    assert not checks["on the Pareto front (SLO, goodput cost) of every policy run"]
    assert not checks["lowest goodput cost of the policies with >= 99% SLO"]
    summary["policies"]["cheapest"] = {**policy, "slo_attainment": 0.997, "goodput_cost_per_1k": 0.043}
    assert floor_checks(summary)[0]["on the Pareto front (SLO, goodput cost) of every policy run"]
    del summary["policies"]["cheapest"]
    summary["policies"]["tritonmix-auto"] = {**policy, "errors": 2, "events": [{**event, "settle_s": None}]}
    checks, _ = floor_checks(summary)
    assert not checks["0 client-visible errors"] and not checks["settle at dispatch <= 0.74 s: x"]
    write_summary(summary, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["policies"]["round-robin"]["cost_per_1k"] == 0.045
    table = markdown_table(summary)
    assert "| round-robin | 50.00% (98.50%) |" in table and "provisioned: round-robin < tritonmix-auto" in table


def test_scenario_fleets_validate() -> None:
    for spec in (QUICK, FULL):
        fleet = spec.fleet()
        assert fleet.names[0] == "inf2" and len(fleet) == 6
        assert all(e.is_local and e.profile for e in fleet.endpoints)
        assert oracle_cost_per_1k(spec.units(), spec.trace())["unplaced_requests"] == 0


def test_scenario_protocol_and_hedge_options() -> None:
    import dataclasses

    from tritonmix.bench.runner import tritonmix_setup
    from tritonmix.bench.senders import grpc_fleet

    spec = dataclasses.replace(QUICK, protocol="grpc", hedge={"max_share": 0.2})
    fleet = spec.fleet()
    assert fleet.controller.hedge.enabled and fleet.controller.hedge.max_share == 0.2
    # the tritonmix policies hedge by default (at most 10% of the requests); AUTO unhedged is AUTO without it
    hedged = QUICK.fleet()
    assert hedged.controller.hedge.enabled and hedged.controller.hedge.max_share == 0.1
    assert not dataclasses.replace(QUICK, hedge=None).fleet().controller.hedge.enabled
    mode, unhedged = tritonmix_setup("tritonmix-auto-unhedged", hedged)
    assert mode == "auto" and not unhedged.controller.hedge.enabled
    assert unhedged.controller.interval_s == hedged.controller.interval_s and unhedged.endpoints == hedged.endpoints
    assert tritonmix_setup("tritonmix-cost", hedged) == ("cost", hedged)
    urls = {name: f"127.0.0.1:{9001 + k}" for k, name in enumerate(fleet.names)}
    moved = grpc_fleet(fleet, urls)
    assert [e.url for e in moved.endpoints] == list(urls.values())
    assert {e.protocol for e in moved.endpoints} == {"grpc"}
    assert [e.price_per_hour for e in moved.endpoints] == [e.price_per_hour for e in fleet.endpoints]


def test_scenario_controller_settings_to_try_reach_the_tritonmix_fleet_and_bad_ones_are_named() -> None:
    import argparse
    import dataclasses

    from tritonmix.cli import CLIError
    from tritonmix.commands import bench

    spec = dataclasses.replace(QUICK, controller={"target_utilisation": 0.9, "hysteresis": 0.05})
    fleet = spec.fleet()
    assert fleet.controller.target_utilisation == 0.9 and fleet.controller.hysteresis == 0.05
    assert fleet.controller.hedge.max_share == 0.1 and fleet.controller.interval_s == QUICK.interval_s  # the rest kept
    assert QUICK.fleet().controller.target_utilisation == 0.8  # the library's default otherwise
    assert bench._settings(["target_utilisation=0.9", "cost_picker=tiered_fill"], "--controller") == {
        "target_utilisation": 0.9, "cost_picker": "tiered_fill"}

    def args(*controller: str) -> argparse.Namespace:
        return argparse.Namespace(quick=True, seed=None, hedge=None, hedge_delay_factor=None, protocol="http",
                                  models_ignore_cancel=False, controller=list(controller), seeds=1,
                                  policies="tritonmix-auto", out="unused")

    with pytest.raises(CLIError, match="not KEY=VALUE"):
        bench.run(args("target_utilisation"))
    with pytest.raises(CLIError, match="unknown field.*target_utilisaton"):
        bench.run(args("target_utilisaton=0.9"))
    with pytest.raises(CLIError, match="target_utilisation"):
        bench.run(args("target_utilisation=-1"))


# ---- second edition: the floor, the reference, settle at dispatch, two cost views, seeds ------------------------

def _simulate(units, arrivals, choose):
    """A discrete-event replay of a policy on ``units`` (each C slots, FIFO when full): [(unit, start, end)]."""
    free = [[0.0] * u.concurrency for u in units]
    out = []
    for k, a in enumerate(arrivals):
        i = choose(k, a, free)
        slot = min(range(len(free[i])), key=lambda j: free[i][j])
        start = max(a, free[i][slot])
        free[i][slot] = start + units[i].latency_s
        out.append((i, start, start + units[i].latency_s))
    return out


def _spill(units):
    order = sorted(range(len(units)), key=lambda i: units[i].cost_per_request)

    def choose(k, a, free):
        return next((i for i in order if min(free[i]) <= a), min(order, key=lambda i: min(free[i])))
    return choose


def _round_robin(units):
    return lambda k, a, free: k % len(units)


def _earliest(units):
    return lambda k, a, free: min(range(len(units)), key=lambda i: (max(a, min(free[i])) + units[i].latency_s, i))


def test_the_floor_is_below_every_simulated_policy_and_the_offline_reference() -> None:
    from tritonmix.bench.oracle import fluid_floor, offline_reference

    units = [UnitState("cheap", 0.76, 0.16, 3), UnitState("mid", 1.34, 0.13, 3), UnitState("dear", 1.0, 0.23, 3)]
    slo = 0.6
    for seed, rps in ((1, 20.0), (2, 35.0), (3, 50.0)):
        trace = ArrivalTrace.build(12.0, rps / 3, rps, 12.0, (), seed)
        floor = fluid_floor(units, trace, slo)
        assert floor["unplaced_requests"] == pytest.approx(0.0, abs=1e-6) and floor["cost_per_1k"] > 0
        reference = offline_reference(units, trace, slo)
        assert reference["slo_attainment"] == 1.0 or rps == 50.0  # greedy: near the capacity, some miss
        if reference["slo_attainment"] == 1.0:
            assert floor["cost_per_1k"] <= reference["cost_per_1k"] + 1e-12
        met = 0
        for policy in (_spill(units), _round_robin(units), _earliest(units)):
            served = _simulate(units, trace.arrivals_s, policy)
            cost = sum(units[i].cost_per_request for i, _, _ in served)
            if all(end - a <= slo for (_, _, end), a in zip(served, trace.arrivals_s)):
                met += 1
                assert floor["cost_per_1k"] <= 1000 * cost / len(served) + 1e-12
        assert met >= 2
    # a floor that fills cheapest first: with room on the cheap unit alone, it is the cheap unit's price
    light = ArrivalTrace.build(10.0, 2.0, 4.0, 10.0, (), 5)
    assert fluid_floor(units, light, slo)["cost_per_1k"] == pytest.approx(1000 * units[0].cost_per_request)


def test_the_floor_and_reference_follow_kills_freezes_and_reclaims() -> None:
    from tritonmix.bench.oracle import fluid_floor, offline_reference, outages

    units = [UnitState("cheap", 0.76, 0.16, 3), UnitState("dear", 1.34, 0.13, 3)]
    events = (Event(2.0, "freeze", "cheap"), Event(4.0, "thaw", "cheap"), Event(6.0, "reclaim", "cheap", 0.5))
    assert outages(["cheap", "dear"], events, 10.0) == {"cheap": [(2.0, 4.0), (6.0, math.inf)], "dear": []}
    trace = ArrivalTrace.build(8.0, 6.0, 6.0, 8.0, events, 3)
    reference = offline_reference(units, trace, 0.6)
    for t, (name, start, end) in zip(trace.arrivals_s, reference["placement"]):
        clear = t < 1.8 or 4.0 <= t < 5.8  # cheap is up for the whole service: 6 req/s fit its 18.75
        assert name == ("cheap" if clear else "dear") or (name == "cheap" and start >= 4.0 and end <= 6.0)
        if name == "cheap":
            assert not (start < 4.0 and end > 2.0) and end <= 6.0 and end - t <= 0.6
    flat = fluid_floor(units, trace, 0.6)["cost_per_1k"]
    assert 1000 * units[0].cost_per_request < flat < 1000 * units[1].cost_per_request


def test_planning_oracle_at_full_utilisation_places_the_demand() -> None:
    units = [UnitState("cheap", 3.6, 0.1, 1), UnitState("dear", 36.0, 0.1, 10)]
    heavy = ArrivalTrace((), (), 10.0, 18.0, 18.0, 10.0, 0)
    full = oracle_cost_per_1k(units, heavy, utilisation=1.0)
    assert full["unplaced_requests"] == 0 and full["cost_per_1k"] == pytest.approx(1000 * (10 * 1e-4 + 8 * 1e-3) / 18)
    with pytest.raises(ValueError, match="utilisation"):
        oracle_cost_per_1k(units, heavy, utilisation=0.0)


def test_steady_stretch_then_cosine() -> None:
    trace = ArrivalTrace.build(40.0, 5.0, 15.0, 20.0, (), 1, steady_s=20.0, steady_rps=30.0)
    assert trace.rate_at(10.0) == 30.0 and trace.rate_at(20.0) == 5.0 and trace.rate_at(30.0) == 15.0
    times = np.array(trace.arrivals_s)
    assert 24 < np.sum(times < 20.0) / 20.0 < 36 and np.sum(times >= 20.0) / 20.0 < 14
    with pytest.raises(ValueError, match="steady"):
        ArrivalTrace.build(10.0, 1.0, 2.0, 10.0, (), 1, steady_s=2.0)
    assert QUICK.trace().steady_s == 4.0 and {e.kind for e in QUICK.events} >= {"freeze", "thaw", "reclaim"}


def test_settle_is_measured_at_dispatch_and_the_return_against_the_reference() -> None:
    from tritonmix.bench.analysis import dispatch_series, placement_series, return_times

    names = ["a", "b"]
    units = [UnitState("a", 1.0, 0.1, 3), UnitState("b", 2.0, 0.1, 3)]
    events = [Event(1.0, "kill", "a"), Event(3.0, "restart", "a")]
    # 20 req/s; the policy sends to b from 1.5 s (0.5 s after the kill), back to a from 4.0 s (1 s after restart)
    records = [RequestRecord(t / 20, 0.05, True, "", ("b",) if 1.5 <= t / 20 < 4.0 else ("a",))
               for t in range(120)]
    counts = dispatch_series(records, names, 6.0)
    assert counts is not None and counts.sum() == 120 and dispatch_series([RequestRecord(0, 0, True)], names, 1) is None
    settle = settle_times(counts, events, records, 0.3, 6.0, names=names)
    assert 0.25 <= settle[0]["settle_s"] <= 0.75
    reference = placement_series([(r.arrival_s, "b" if 1.0 <= r.arrival_s < 3.0 else "a") for r in records],
                                 names, 6.0)
    back = return_times(counts, reference, events, names, units, 6.0)
    assert back[0] is None and 0.5 <= back[1] <= 1.25
    # the target is the lower of the policy's own share before the fault and the reference's: half on a before the
    # kill and half again from the restart on is back at once, though the reference sends a everything
    halves = [RequestRecord(t / 20, 0.05, True, "", ("b",) if (t % 2 or 1.0 <= t / 20 < 3.0) else ("a",))
              for t in range(120)]
    everything = placement_series([(r.arrival_s, "a") for r in halves], names, 6.0)
    assert return_times(dispatch_series(halves, names, 6.0), everything, events, names, units, 6.0)[1] == 0.0
    fig = policy_figures(records, [], {"a": 1.0, "b": 2.0}, names, events, 0.3, 6.0, units, reference=reference)
    assert fig["shares_from"] == "dispatch" and "return_s" in fig["events"][1] and "return_s" not in fig["events"][0]


def test_completions_are_binned_in_the_middle_of_their_sampling_period() -> None:
    early = Sample(0.5, "a", 4, 0, 0.1, 0.0, 0.25)  # completions of [0.25, 0.5): bin 1, not bin 2
    assert share_series([early], ["a"], 1.0)[1, 0] == 4 and early.mid_s == pytest.approx(0.375)
    assert share_series([Sample(0.5, "a", 4, 0, 0.1)], ["a"], 1.0)[2, 0] == 4  # unknown start: at its stamp


def test_provisioned_cost_charges_the_replicas_a_reactive_autoscaler_keeps() -> None:
    from tritonmix.bench.analysis import Provisioning, busy_from_intervals, provisioned_cost

    settings = Provisioning(window_s=1.0, target_utilisation=0.5, scale_up_delay_s=1.0, stabilisation_s=1.0)
    busy = np.array([[0.5], [0.0], [0.0], [0.0]])  # one window busy 0.5 s at 50%: one replica
    # need 1 in window 0; kept for windows 1 and 2 (delay 1 + stabilisation 1), none in window 3
    assert provisioned_cost(busy, [3600.0], settings) == pytest.approx(3.0)
    assert provisioned_cost(busy * 3, [3600.0], settings) == pytest.approx(9.0)  # 1.5 s: three replicas
    spans = busy_from_intervals([("a", 0.5, 1.5), ("a", 2.9, 3.0)], ["a"], 4.0, 1.0)
    assert spans[:4, 0] == pytest.approx([0.5, 0.5, 0.1, 0.0])
    with pytest.raises(ValueError, match="provisioning"):
        Provisioning(target_utilisation=0.0)


def _fake_run(policy: str, seed: int, trace: ArrivalTrace, endpoint: str, late: int, error: int) -> dict:
    requests = [[t, 0.9 if k < late else 0.1, k >= late + error or k < late, "" if k >= late + error or k < late
                 else "refused", [endpoint]] for k, t in enumerate(trace.arrivals_s)]
    samples = [[b * 0.25 + 0.25, endpoint, 5.0, 0.0, 0.8, 0.0, b * 0.25] for b in range(int(trace.duration_s * 4))]
    return {"policy": policy, "seed": seed, "order": 0, "requests": requests, "samples": samples, "decisions": []}


def test_recompute_gives_medians_worst_and_per_seed_figures_from_raw() -> None:
    import dataclasses

    from tritonmix.bench.report import markdown_table
    from tritonmix.bench.run import policy_order, recompute

    spec = dataclasses.replace(QUICK, duration_s=6.0, steady_s=2.0, events=QUICK.events[:1])
    runs = []
    for seed in (7, 8):
        trace = dataclasses.replace(spec, seed=seed).trace()
        runs.append(_fake_run("tritonmix-auto", seed, trace, "inf2", late=0, error=0))
        runs.append(_fake_run("round-robin", seed, trace, "trn1", late=seed - 5, error=1))
    raw = {"scenario": dataclasses.asdict(spec), "endpoints": [n for n, _ in spec.pools],
           "prices": {e.name: e.price_per_hour for e in spec.fleet().endpoints}, "seeds": 2,
           "policies": ["tritonmix-auto", "round-robin"], "runs": runs}
    summary = recompute(json.loads(json.dumps(raw)))
    assert summary["floor"]["cost_per_1k"] > 0 and len(summary["floor"]["per_seed"]) == 2
    assert summary["offline_reference"]["slo_attainment"] == 1.0
    auto, rr = summary["policies"]["tritonmix-auto"], summary["policies"]["round-robin"]
    assert auto["slo_attainment"] == 1.0 and auto["errors"] == 0 and len(auto["per_seed"]) == 2
    assert rr["errors"] == 2 and rr["slo_attainment_worst"] < rr["slo_attainment"] < 1.0
    assert rr["goodput_cost_per_1k"] > rr["cost_per_1k"]
    assert auto["goodput_cost_per_1k"] == pytest.approx(statistics_median(
        [f["goodput_cost_per_1k"] for f in auto["per_seed"]]))
    assert summary["floors"]["0 client-visible errors"] and summary["floors_per_seed"]["0 client-visible errors"] == 2
    assert "offline reference" in markdown_table(summary) and "seeds it held in" in markdown_table(summary)
    assert sorted(policy_order(["a", "b", "c", "d"], 1)) == ["a", "b", "c", "d"]
    assert len({tuple(policy_order(["a", "b", "c", "d"], s)) for s in range(6)}) > 1


def statistics_median(values):
    import statistics

    return statistics.median(values)


def test_events_reach_the_live_fleet() -> None:
    from tritonmix.bench.runner import apply_event

    calls = []

    class Fleet:
        def __getattr__(self, name):
            return lambda *args: calls.append((name,) + args)

    for event in (Event(1.0, "freeze", "a"), Event(2.0, "thaw", "a"), Event(3.0, "reclaim", "b", 0.5),
                  Event(4.0, "slow_down", "c", 3.0), Event(5.0, "set_capacity", "a", 1)):
        apply_event(Fleet(), event)
    assert calls == [("freeze", "a"), ("thaw", "a"), ("kill", "b"), ("slow_down", "c", 3.0), ("set_capacity", "a", 1)]
