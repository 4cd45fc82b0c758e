"""Latency outliers: the request-path miss-share rule (no scrape lag), probation after a latency ejection (a trial
share, fast re-ejection with the doubled backoff), and an endpoint that recovers getting its share back.

Simulated time (FakeClock); fleet of test_controller_sim: 4 x inf2 (67 ms, 1 slot) and 2 x trn1 (51 ms), SLO 250 ms,
ticks every 0.5 s.
"""
from __future__ import annotations

import math
from typing import Any, List

from tritonmix.controller.decider import PROBATION_LIMIT, PROBATION_SHARE
from tritonmix.controller.model import ModelPlan
from tritonmix.controller.policy import OutlierDetector
from tritonmix.controller.policy.probation import with_trial_share
from tritonmix.controller.simulation import ServerModel, Simulation
from tritonmix.controller.model import INTERACTIVE
from tritonmix.fleet import Fleet

KEY = ("sd", INTERACTIVE)
SLOW = 0


def make_fleet(**controller: Any) -> Fleet:
    eps = [{"name": f"inf2-{k}", "url": f"127.0.0.1:{9000 + k}", "accelerator": "neuron", "price_per_hour": 0.7582,
            "max_rps": 14.9, "max_concurrency": 1} for k in range(4)]
    eps += [{"name": f"trn1-{k}", "url": f"127.0.0.1:{9100 + k}", "accelerator": "trainium",
             "price_per_hour": 1.3438, "max_rps": 19.6, "max_concurrency": 1} for k in range(2)]
    return Fleet.from_dict({"endpoints": eps, "slo_ms": 250, "controller": {"interval_s": 0.5, **controller}})


def slowed(seed: int, recover_at_s: float = math.inf, until_s: float = 45.0) -> Simulation:
    """inf2-0 ten times slower from t = 10 s (and back to normal at ``recover_at_s``), 30 req/s interactive."""
    sim = Simulation.build(make_fleet(), [ServerModel(0.067)] * 4 + [ServerModel(0.051)] * 2, seed=seed, jitter=0.0)
    sim.at(10.0, lambda: setattr(sim.servers[SLOW], "service_s", 0.67))
    if recover_at_s < until_s:
        sim.at(recover_at_s, lambda: setattr(sim.servers[SLOW], "service_s", 0.067))
    sim.run(until_s, {KEY: 30.0})
    return sim


def _weights_after(sim: Simulation, t_s: float, count: int) -> List[float]:
    return [p.interactive_weights[SLOW] for t, p in sim.ticks if t >= t_s - 1e-9][:count]  # ticks: run time


def test_probation_lasts_until_a_trial_has_answered() -> None:
    """A probation window that drew no trial request measured nothing: it goes on until one of ours completed."""
    det = OutlierDetector(4, latency_factor=3.0, slo_s=0.3, base_s=1.0, probation_s=1.0)
    pools, rest = ["p"] * 4, [0.07] * 3
    det.update(0.0, [5] * 4, [0] * 4, [1.0, *rest], pools)  # 1.0 s against a pool of 0.07 s: a latency outlier
    assert det.ejected(0)
    det.update(1.0, [0, 5, 5, 5], [0] * 4, [math.nan, *rest], pools)  # backoff over: on probation
    assert not det.ejected(0) and det.on_probation(0, 1.0)
    det.update(2.5, [0, 5, 5, 5], [0] * 4, [math.nan, *rest], pools)  # past probation_s, no trial yet: renewed
    assert det.on_probation(0, 3.4)
    det.update(3.0, [1, 5, 5, 5], [0] * 4, [0.07, *rest], pools)  # a trial answered in time
    det.update(3.5, [0, 5, 5, 5], [0] * 4, [0.07, *rest], pools)  # the window ends: not renewed
    assert not det.on_probation(0, 3.5) and not det.ejected(0)


def test_trial_share_caps_and_grants_the_probation_weight() -> None:
    plan = ModelPlan("capacity", (0.0,) * 4, (0.0,) * 4, (0.5, 0.0, 0.25, 0.25), (0.25,) * 4)
    out = with_trial_share(plan, [0, 1], 0.02)
    assert out.interactive_weights[0] == out.interactive_weights[1] == 0.02
    assert math.isclose(sum(out.interactive_weights), 1.0)
    assert math.isclose(out.interactive_weights[2], out.interactive_weights[3])
    assert out.batch_weights == plan.batch_weights


def test_request_path_misses_eject_a_slowed_endpoint_before_any_scrape_shows_it() -> None:
    det = OutlierDetector(4, latency_factor=3.0, slo_s=0.3)
    pools = ["neuron"] * 4
    nan = [math.nan] * 4  # the server's service times: not scraped yet
    # queueing (our latency 2x the pool's, half the requests late) is no outlier
    assert det.update(0.0, [6] * 4, [0] * 4, nan, pools, over_slo=[0, 3, 0, 0], ours_s=[0.1, 0.2, 0.1, 0.1]) == []
    events = det.update(0.5, [6, 3, 6, 6], [0] * 4, nan, pools, over_slo=[0, 3, 0, 0], ours_s=[0.06, 0.5, 0.06, 0.07])
    assert [(e.kind, e.index) for e in events] == [("eject", 1)] and "SLO misses" in events[0].reason
    assert det.cause[1] == "latency"


def test_a_failed_probation_re_ejects_fast_with_the_doubled_backoff() -> None:
    sim = slowed(seed=3)
    out = [(round(d.at_s - sim.t0, 2), d.kind, d) for d in sim.controller.decisions() if d.kind in ("eject", "readmit")]
    assert out[0][1] == "eject" and "latency outlier" in out[0][2].summary and out[0][0] <= 11.5
    readmits = [(t, d) for t, kind, d in out if kind == "readmit"]
    assert readmits and all("probation" in d.summary for _, d in readmits)
    probation_s = sim.controller.health.outliers.probation_s
    for (t_back, d_back), (t_next, _, d_next) in zip(readmits, [o for o in out if o[1] == "eject"][1:]):
        assert t_next - t_back <= probation_s + 0.5, f"probation from {t_back} failed only at {t_next}"
        k = d_back.figures["ejections"]  # the k-th ejection lasted 2 x 2^(k-1) s: the next one twice that
        assert d_next.figures["backoff_s"] == 2.0 * 2 ** k, d_next.figures
    # the trial share while on probation, nothing once it failed
    first_back = readmits[0][0]
    weights = _weights_after(sim, first_back, 2)
    assert 0.0 < weights[0] <= PROBATION_SHARE + 1e-9, weights
    # what the slow endpoint cost after it was first shed: a trickle of trial requests
    shed_at = out[0][0]
    after = [r for r in sim.results if r.arrived_s > shed_at + 1.0]
    mine = [r for r in after if r.endpoint == SLOW]
    assert len(mine) <= 0.01 * len(after), (len(mine), len(after))


def test_an_endpoint_that_recovers_gets_its_share_back() -> None:
    """The trial is how the estimator learns that the endpoint is fast again: without it, the service time it
    learnt while slow (over the SLO) keeps it out of interactive traffic for good."""
    sim = slowed(seed=4, recover_at_s=20.0)
    share = sim.share_by_endpoint(38.0).get(SLOW, 0.0)
    assert share >= 0.05, sim.share_by_endpoint(38.0)
    assert sim.controller.observer.states()["sd"].capacity[SLOW].meets_slo


def test_trials_on_probation_go_one_at_a_time() -> None:
    """A readmitted endpoint that is still slow gets one trial in flight at a time (the plan's limit for it is
    PROBATION_LIMIT), so what its probation costs is one request's wait, not a burst of them."""
    sim = slowed(seed=5)
    decisions = [d for d in sim.controller.decisions() if d.kind in ("eject", "readmit")]
    windows = []
    readmits = [d.at_s - sim.t0 for d in decisions if d.kind == "readmit"]
    assert readmits, [d.summary for d in decisions]
    for t_back in readmits:
        later = [d.at_s - sim.t0 for d in decisions if d.kind == "eject" and d.at_s - sim.t0 > t_back]
        windows.append((t_back, later[0] if later else math.inf))
    limits = [p.limits("sd")[SLOW] for t, p in sim.ticks if any(a <= t < b for a, b in windows)]
    assert PROBATION_LIMIT == 1 and limits and all(x == 1 for x in limits), limits
    trials = sorted((r.arrived_s, r.arrived_s + r.latency_s) for r in sim.results
                    if r.endpoint == SLOW and any(a <= r.arrived_s < b for a, b in windows))
    assert trials, "no trial request on probation"
    overlaps = sum(1 for (s0, e0), (s1, _) in zip(trials, trials[1:]) if s1 < e0 - 1e-9)
    assert overlaps == 0, trials
