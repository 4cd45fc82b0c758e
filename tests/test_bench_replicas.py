"""``tritonmix bench replicas``' arithmetic without a fleet: the oracle's replicas from the offline reference, the
comparison on the interval grid, and the files it writes."""
from __future__ import annotations

import math
from pathlib import Path

from tritonmix.bench.replicas import ReplicaSeries, compare, oracle_replicas, write_outputs
from tritonmix.bench.scenario import QUICK


def test_the_oracle_needs_the_load_it_places_over_u_times_a_units_rate() -> None:
    trace = QUICK.trace()
    oracle = oracle_replicas(QUICK, trace, 1.0)
    fleet = QUICK.fleet()
    assert set(oracle) == {e.pool_name for e in fleet.endpoints}
    assert all(len(row) == math.ceil(QUICK.duration_s) for row in oracle.values())
    # the reference puts the steady opening (22 req/s) on the cheap neuron pool: more than one unit at u = 0.8
    assert oracle["neuron"][0] >= 2 and max(oracle["cpu"]) == 0


def _series() -> ReplicaSeries:
    # oracle: 1 replica, 3 from t = 2 s to 4 s, then 1; desired follows 0.5 s late, then stays 1 above
    desired = [(0.0, {"p": 1}), (2.5, {"p": 3}), (4.5, {"p": 2})]
    return ReplicaSeries(["p"], desired, {"p": [1, 1, 3, 3, 1, 1]}, 1.0, 0.5, 6.0)


def test_compare_counts_the_error_the_time_above_and_below_and_the_scale_up_delay() -> None:
    f = compare(_series())["p"]
    # grid of 12 points: below at 2.0 (1 vs 3), above from 4.0 to 5.5 (3 vs 1 at 4.0, then 2 vs 1: four points)
    assert f["below"] == 1 / 12 and f["above"] == 4 / 12 and f["equal"] == 7 / 12
    assert f["mean_abs_error"] == (2 + 2 + 1 + 1 + 1) / 12
    assert f["rises"] == 1 and f["delay_median_s"] == 0.5 and f["rises_not_reached"] == 0


def test_the_outputs_are_written(tmp_path: Path) -> None:
    paths = write_outputs(_series(), tmp_path, ["# header"])
    assert paths["csv"].read_text().splitlines()[:2] == ["t_s,pool,desired,oracle", "0.00,p,1,1"]
    assert "| p | 0.58 | 33% | 8% | 58% | 1 | 0.50 s / 0.50 s | 0 |" in paths["md"].read_text()
    assert paths["png"].stat().st_size > 1000
