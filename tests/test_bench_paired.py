"""benches/scenario_paired.py: the seed-by-seed comparison of two policies, on a committed raw file."""
from __future__ import annotations

import statistics

import pytest

from benches_support import RESULTS, bench_script

RAW = RESULTS / "scenario-quick-auto-cost-38b56b2-raw.json.gz"


def test_pairs_are_the_seeds_both_policies_ran_with_their_own_figures(capsys):
    paired = bench_script("scenario_paired")
    raw = paired.load(str(RAW))
    pairs = paired.pairs(raw, "tritonmix-cost", "tritonmix-auto")
    assert [seed for seed, _, _ in pairs] == [2024, 2025, 2026, 2027, 2028]
    for seed, cost, auto in pairs:
        assert cost["seed"] == auto["seed"] == seed and cost is not auto
        runs = {r["policy"]: r for r in raw["runs"] if r["seed"] == seed}
        assert auto["requests"] == len(runs["tritonmix-auto"]["requests"])
    with pytest.raises(SystemExit, match="policy round-robin not in this raw file"):
        paired.pairs(raw, "round-robin", "tritonmix-auto")
    paired.main([str(RAW)])
    out = capsys.readouterr().out
    assert "5 pairs; tritonmix-auto against tritonmix-cost" in out and out.count("raw.json.gz") == 5


def test_the_bootstrap_interval_holds_the_mean_and_narrows_with_more_pairs():
    paired = bench_script("scenario_paired")
    few = [0.01, 0.03, -0.02, 0.05, 0.02]
    lo, hi = paired.interval(few)
    assert lo < statistics.fmean(few) < hi
    lo_many, hi_many = paired.interval(few * 8)
    assert hi_many - lo_many < hi - lo
    assert paired.interval([0.02] * 6) == (pytest.approx(0.02), pytest.approx(0.02))


def test_before_pairs_one_policy_across_two_runs_seed_by_seed(capsys):
    """``--before``: the same policy in two runs (here the default target utilisation against 0.9, seeds 2024-2033),
    each side's figures from its own raw file."""
    paired = bench_script("scenario_paired")
    before_path = RESULTS / "scenario-quick-estimator-raw.json.gz"
    after_path = RESULTS / "scenario-quick-target-0.9-raw.json.gz"
    before, after = paired.load(str(before_path)), paired.load(str(after_path))
    pairs = paired.across(before, after, "tritonmix-cost")
    assert [seed for seed, _, _ in pairs] == list(range(2024, 2034))
    for seed, old, new in pairs:
        runs = [{r["policy"]: r for r in raw["runs"] if r["seed"] == seed}["tritonmix-cost"] for raw in (before, after)]
        assert (old["requests"], new["requests"]) == (len(runs[0]["requests"]), len(runs[1]["requests"]))
        assert old["seed"] == new["seed"] == seed and old is not new
    assert any(old["goodput_cost_per_1k"] != new["goodput_cost_per_1k"] for _, old, new in pairs)
    with pytest.raises(SystemExit, match="policy round-robin is not in both raw files"):
        paired.across(before, after, "round-robin")
    paired.main([str(after_path), "--before", str(before_path), "--b", "tritonmix-cost"])
    out = capsys.readouterr().out
    assert f"10 pairs; tritonmix-cost in these runs against {before_path}:" in out
