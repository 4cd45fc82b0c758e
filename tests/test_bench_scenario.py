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
from tritonmix.bench.trace import ArrivalTrace, Event, cosine_rate, poisson_arrivals


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
    # without the queue, the share of the cut endpoint alone decides: 50% before, 10% from t = 2 s on
    samples = [Sample(b * 0.25, n, (5 if b < 8 else 1) if n == "a" else (5 if b < 8 else 9), 0, 0.5)
               for b in range(17) for n in names]
    settle = settle_times(share_series(samples, names, 4.0), cut, [], 0.3, 4.0, names=names)[0]["settle_s"]
    assert 0.75 <= settle <= 1.25


def test_report_and_floors(tmp_path) -> None:
    policy = {"slo_attainment": 1.0, "errors": 0, "p50_s": 0.1, "p95_s": 0.2, "p99_s": 0.3, "cost_per_1k": 0.05,
              "cost_vs_oracle": 1.05, "events": [{"event": "x", "at_s": 1.0, "settle_s": 0.5, "recovery_s": 0.0}]}
    summary = {"oracle": {"cost_per_1k": 0.048},
               "policies": {"tritonmix-auto": policy,
                            "round-robin": {**policy, "cost_per_1k": 0.2, "slo_attainment": 0.5}}}
    checks = floor_checks(summary)
    assert checks["auto: cost <= 1.10x oracle"] and checks["auto beats round-robin on cost and SLO"]
    summary["policies"]["tritonmix-auto"] = {**policy, "errors": 2}
    assert not floor_checks(summary)["auto: 0 client-visible errors"]
    write_summary(summary, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["policies"]["round-robin"]["cost_per_1k"] == 0.2
    assert "| round-robin | 50.00% |" in markdown_table(summary)


def test_scenario_fleets_validate() -> None:
    for spec in (QUICK, FULL):
        fleet = spec.fleet()
        assert fleet.names[0] == "inf2" and len(fleet) == 6
        assert all(e.is_local and e.profile for e in fleet.endpoints)
        assert oracle_cost_per_1k(spec.units(), spec.trace())["unplaced_requests"] == 0


def test_scenario_protocol_and_hedge_options() -> None:
    import dataclasses

    from tritonmix.bench.senders import grpc_fleet

    spec = dataclasses.replace(QUICK, protocol="grpc", hedge={"max_share": 0.2})
    fleet = spec.fleet()
    assert fleet.controller.hedge.enabled and fleet.controller.hedge.max_share == 0.2
    assert not QUICK.fleet().controller.hedge.enabled
    urls = {name: f"127.0.0.1:{9001 + k}" for k, name in enumerate(fleet.names)}
    moved = grpc_fleet(fleet, urls)
    assert [e.url for e in moved.endpoints] == list(urls.values())
    assert {e.protocol for e in moved.endpoints} == {"grpc"}
    assert [e.price_per_hour for e in moved.endpoints] == [e.price_per_hour for e in fleet.endpoints]
