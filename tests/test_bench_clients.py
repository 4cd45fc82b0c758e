"""Many client processes on one fleet (``tritonmix bench clients``): the pieces without servers, then one short real
replay (two EMULATED pools, a steady load split over two client processes, real Triton servers)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tritonmix.bench.fleetwide import (cheapest_pool, cheapest_share, clients_floor_checks, clients_table,
                                       controller_figures, disturbed_endpoints)
from tritonmix.bench.multiclient import parse_setups, plane_missing, run_clients
from tritonmix.bench.sampler import Sample
from tritonmix.bench.scenario import QUICK, steady
from tritonmix.bench.trace import Event
from tritonmix.bench.workers import ControllerCounters, split_round_robin

FIGURES = ("requests", "slo_attainment", "errors", "p99_s", "cost_per_1k", "cheapest_share_mean",
           "cheapest_share_std", "ejections", "ejected", "mode_switches", "ticks", "scrapes_per_tick",
           "scrapes_per_endpoint_per_tick", "disturbed", "clients", "plane")


def test_setups_parse_and_refuse_bad_names() -> None:
    assert [(s.name, s.clients, s.plane) for s in parse_setups("n1, n8-plane,n8-local,n4")] == [
        ("n1", 1, False), ("n8-plane", 8, True), ("n8-local", 8, False), ("n4", 4, False)]
    for bad in ("n0", "8", "n8-remote", "n1,n1", ""):
        with pytest.raises(ValueError):
            parse_setups(bad)


def test_split_is_round_robin_and_loses_nothing() -> None:
    arrivals = [0.1 * k for k in range(11)]
    shares = split_round_robin(arrivals, 3)
    assert shares[0] == (0.0, 0.30000000000000004, 0.6000000000000001, 0.9) and len(shares[2]) == 3
    assert sorted(t for share in shares for t in share) == arrivals


def test_steady_load_is_above_the_cheapest_pool_and_inside_the_fleet() -> None:
    spec = steady(16.0, 10.0)
    units = spec.units()
    assert [u.name for u in units] == ["inf2", "trn1", "g5-triton", "g6-triton", "g5-cuda"]
    assert cheapest_pool(units) == "inf2" and cheapest_pool(QUICK.units()) == "inf2"
    assert units[0].mu_rps < 16.0 < sum(u.mu_rps for u in units)
    assert spec.trace().events == () and abs(len(spec.trace().arrivals_s) - 160) < 50
    assert len(spec.fleet().endpoints) == 5 and spec.fleet().endpoints[0].max_concurrency == 1


def test_cheapest_share_mean_and_spread() -> None:
    names = ["a", "b"]
    # per 0.5 s bin: a serves all, then none, alternately (a herd), or half every bin (steady)
    herd = [Sample(0.25 * b + 0.01, n, 4 if (b // 2) % 2 == (n == "b") else 0, 0, 0.1) for b in range(16)
            for n in names]
    steady_split = [Sample(0.25 * b + 0.01, n, 2, 0, 0.1) for b in range(16) for n in names]
    assert cheapest_share(herd, names, "a", 4.0) == {"mean": 0.5, "std": 0.5, "bins": 8}
    assert cheapest_share(steady_split, names, "a", 4.0) == {"mean": 0.5, "std": 0.0, "bins": 8}
    assert cheapest_share([], names, "a", 4.0)["mean"] is None


def test_controller_figures_count_decisions_and_scrapes_per_tick() -> None:
    decisions = [(1.0, "eject", "b", "eject b"), (1.1, "mode", None, "cost -> capacity"), (1.2, "readmit", "b", "")]
    local = controller_figures(decisions, [10, 12], [(11, 11), (12, 12)], None, ["a", "b"])
    assert local["ejections"] == 1 and local["ejected"] == ["b"] and local["mode_switches"] == 1
    assert local["ticks"] == 11 and local["scrapes_per_tick"] == {"a": 23 / 11, "b": 23 / 11}
    plane = controller_figures([], [None, None], [None, None, (20, 21)], 20, ["a", "b"])
    assert plane["scrapes"] == [20, 21] and plane["scrapes_per_endpoint_per_tick"] == 21 / 20
    absent = controller_figures([], [5], [None], None, ["a"])
    assert absent["scrapes_per_tick"] is None and absent["ticks"] == 5
    assert ControllerCounters(10, (4, 5)).since(ControllerCounters(3, (1, 1))) == ControllerCounters(7, (3, 4))
    assert ControllerCounters(10, None).since(ControllerCounters(3, (1,))) == ControllerCounters(7, None)
    assert disturbed_endpoints([Event(1.0, "kill", "c")], [Sample(1.0, "b", 1, 1, 0.1)]) == ["b", "c"]


def test_floor_checks() -> None:
    n1 = {"clients": 1, "plane": False, "errors": 0, "slo_attainment": 0.99, "cost_per_1k": 0.10}
    plane = {**n1, "clients": 8, "plane": True, "slo_attainment": 0.985, "cost_per_1k": 0.104, "ticks": 100,
             "scrapes": [101, 100]}
    local = {**n1, "clients": 8, "slo_attainment": 0.95, "ejected": ["b"], "disturbed": ["b"]}
    checks = clients_floor_checks({"n1": n1, "n8-plane": plane, "n8-local": local})
    assert checks == {"n8-plane: 0 errors": True, "n8-plane: SLO attainment >= n1's - 1 point": True,
                      "n8-plane: cost per 1k <= 1.05x n1's": True, "n8-plane: one scrape per endpoint per tick": True,
                      "n8-local: 0 errors": True, "n8-local: SLO attainment >= n1's - 3 points": False,
                      "n8-local: no ejection of an undisturbed endpoint": True}
    worse = clients_floor_checks({"n1": n1, "n8-plane": {**plane, "scrapes": [800, 800]},
                                  "n8-local": {**local, "ejected": ["a", "b"]}})
    assert not worse["n8-plane: one scrape per endpoint per tick"]
    assert not worse["n8-local: no ejection of an undisturbed endpoint"]
    assert clients_floor_checks({"n8-local": local}) == {}


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """n1, n2-local and (where the control plane exists) n2-plane: 3 s of 10 req/s on two pools."""
    out = tmp_path_factory.mktemp("clients")
    spec = steady(10.0, 3.0, pools=2)
    setups = "n1,n2-local" + ("" if plane_missing() else ",n2-plane")
    summary = run_clients(spec, out, parse_setups(setups))
    return spec, summary, out


def test_every_arrival_is_one_request_and_every_figure_is_there(replay) -> None:
    spec, summary, out = replay
    arrivals = len(spec.trace().arrivals_s)
    assert summary["load"]["requests"] == arrivals and summary["cheapest_pool"] == "inf2"
    for name in ("n1", "n2-local"):
        fig = summary["setups"][name]
        assert not [key for key in FIGURES if key not in fig], name
        assert fig["requests"] == arrivals and fig["errors"] == 0, fig["error_kinds"]
        assert fig["ticks"] >= 10  # 3 s at a 0.1 s interval
        assert 0.0 <= fig["cheapest_share_mean"] <= 1.0 and fig["cheapest_share_std"] >= 0.0
        assert fig["cost_per_1k"] > 0 and sum(fig["traffic_share"].values()) == pytest.approx(1.0)
        assert fig["disturbed"] == [] and set(fig["ejected"]) <= {"inf2", "trn1"}
        assert fig["ejections"] >= len(fig["ejected"]) and fig["mode_switches"] >= 0
        if fig["scrapes_per_tick"] is not None:
            assert set(fig["scrapes_per_tick"]) == {"inf2", "trn1"}
    written = json.loads((out / "summary.json").read_text())
    assert set(written["setups"]) >= {"n1", "n2-local"} and "n2-local: 0 errors" in written["floors"]
    raw = json.loads((out / "raw.json").read_text())
    assert len(raw["policies"]["n2-local"]["requests"]) == arrivals
    arrivals_seen = np.array([r[0] for r in raw["policies"]["n2-local"]["requests"]])
    assert np.all(np.diff(arrivals_seen) >= 0)
    assert "| n2-local | 2 |" in (out / "summary.md").read_text() == clients_table(summary) + "\n"


def test_clients_following_one_plane(replay) -> None:
    if plane_missing():
        pytest.skip("tritonmix.control_plane does not exist yet")
    spec, summary, _ = replay
    fig = summary["setups"]["n2-plane"]
    assert fig["requests"] == len(spec.trace().arrivals_s) and fig["errors"] == 0
    assert fig["ticks"] >= 10 and set(fig["scrapes_per_tick"]) == {"inf2", "trn1"}
    assert not [key for key in FIGURES if key not in fig]
    # the floors are judged, not asserted here: a short run on a shared machine is no measurement
    assert {"n2-plane: 0 errors", "n2-plane: one scrape per endpoint per tick"} <= set(summary["floors"])
