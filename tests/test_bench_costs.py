"""benches/scenario_costs.py: a policy's busy cost split into its placement and the work beyond it, from raw files."""
from __future__ import annotations

import math

import pytest

from benches_support import RESULTS, bench_script

RAW = RESULTS / "scenario-quick-auto-cost-38b56b2-raw.json.gz"


def test_busy_cost_and_floor_are_the_summarys_and_the_pools_add_up(capsys):
    from tritonmix.bench.run import recompute

    costs = bench_script("scenario_costs")
    raw = costs.load(str(RAW))
    table = costs.breakdown(raw)
    summary = recompute(raw)
    assert set(table) == {"tritonmix-auto", "tritonmix-cost"}
    floors = summary["floor"]["per_seed"]
    for policy, rows in table.items():
        per_seed = {f["seed"]: f for f in summary["policies"][policy]["per_seed"]}
        assert [r["seed"] for r in rows] == sorted(per_seed)
        for r in rows:
            fig = per_seed[r["seed"]]
            served = fig["requests"] - fig["errors"]
            # the summary's busy cost is per 1,000 requests served, this one per 1,000 requests
            assert r["busy"] * r["requests"] == pytest.approx(fig["cost_per_1k"] * served, rel=1e-9)
            assert r["floor"] == pytest.approx(next(f["cost_per_1k"] for f in floors if f["seed"] == r["seed"]))
            assert sum(r["pools"].values()) == pytest.approx(1.0)
            assert r["extra"] == pytest.approx(r["busy"] / r["placement"] - 1.0)
            assert 1.0 <= r["executions"] < 1.2 and r["placement"] > r["floor"]
    costs.main([str(RAW), "--policy", "tritonmix-cost"])
    out = capsys.readouterr().out
    assert out.count("tritonmix-cost") == 6 and "tritonmix-auto" not in out and "median" in out


def test_placement_prices_each_request_at_its_first_endpoint_as_it_was_when_it_arrived():
    from tritonmix.bench.oracle import UnitState
    from tritonmix.bench.trace import Event

    costs = bench_script("scenario_costs")
    units = [UnitState("a", 3.6, 0.2, 2), UnitState("b", 7.2, 0.1, 2)]
    events = [Event(at_s=5.0, kind="slow_down", endpoint="a", value=3.0, label="a slows down")]
    requests = [[1.0, 0.2, True, "", ["a"]], [6.0, 0.6, True, "", ["a", "b"]], [7.0, 0.1, True, "", ["b"]],
                [8.0, 0.0, False, "refused", []]]
    spent = costs.placement_cost(requests, units, events, {"a": 3.6, "b": 7.2})
    assert spent["a"] == pytest.approx(0.001 * 0.2 + 0.001 * 0.6)  # $3.6/h = $0.001/s; 3x slower after 5 s
    assert spent["b"] == pytest.approx(0.002 * 0.1) and not math.isnan(spent["b"])
