"""benches/scenario_settle.py: why an event settled when it did, from the checks that make the settle figure."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tritonmix.bench.analysis import dispatch_series, pending_series, settle_times, share_series
from tritonmix.bench.loadgen import RequestRecord
from tritonmix.bench.run import _spec_of
from tritonmix.bench.sampler import Sample
from tritonmix.bench.trace import Event

from benches_support import RESULTS, bench_script

RAW = RESULTS / "scenario-quick-auto-cost-38b56b2-raw.json.gz"


def test_the_blamed_settle_is_the_reported_one_for_every_event_and_seed(capsys):
    settle = bench_script("scenario_settle")
    raw = settle.load(str(RAW))
    spec, names = _spec_of(raw["scenario"]), list(raw["endpoints"])
    seen = 0
    for policy in ("tritonmix-auto", "tritonmix-cost"):
        by_seed = {s["seed"]: s["checks"] for s in settle.policy_checks(raw, policy)}
        for run in (r for r in raw["runs"] if r["policy"] == policy):
            records = [RequestRecord(a, lat, bool(ok), err, tuple(eps)) for a, lat, ok, err, eps in run["requests"]]
            samples = [Sample(*s) for s in run["samples"]]
            events = dataclasses.replace(spec, seed=run["seed"]).trace().events
            reported = settle_times(dispatch_series(records, names, spec.duration_s), events, records,
                                    spec.slo_ms / 1000.0, spec.duration_s, names=names,
                                    pending=pending_series(samples, names, spec.duration_s), units=spec.units())
            for figure, check in zip(reported, by_seed[run["seed"]], strict=True):
                blamed = settle.blame(check)
                assert blamed["settle_s"] == figure["settle_s"], (policy, run["seed"], figure["event"])
                assert bool(blamed["held_by"]) == (figure["settle_s"] != 0.0)
                seen += 1
    assert seen == 2 * 5 * 7
    settle.main([str(RAW), "--event", "inf2 loses", "-v"])
    out = capsys.readouterr().out
    assert out.count("tritonmix-auto seed") == 5 and "inf2 loses 2/3 of its capacity: held last by" in out
    with pytest.raises(SystemExit, match="policy round-robin not in this raw file"):
        settle.main([str(RAW), "--policy", "round-robin"])


def test_runs_that_record_no_endpoint_are_judged_on_completions_as_the_summary_does():
    """The gateway's runs record no endpoint per request: the shares are the servers' completions."""
    settle = bench_script("scenario_settle")
    raw = settle.load(str(RAW))
    for run in raw["runs"]:
        run["requests"] = [[a, lat, ok, err, []] for a, lat, ok, err, _ in run["requests"]]
    spec, names = _spec_of(raw["scenario"]), list(raw["endpoints"])
    run = next(r for r in raw["runs"] if r["policy"] == "tritonmix-cost")
    records = [RequestRecord(a, lat, bool(ok), err, ()) for a, lat, ok, err, _ in run["requests"]]
    samples = [Sample(*s) for s in run["samples"]]
    reported = settle_times(share_series(samples, names, spec.duration_s),
                            dataclasses.replace(spec, seed=run["seed"]).trace().events, records,
                            spec.slo_ms / 1000.0, spec.duration_s, names=names,
                            pending=pending_series(samples, names, spec.duration_s), units=spec.units())
    checks = next(s["checks"] for s in settle.policy_checks(raw, "tritonmix-cost") if s["seed"] == run["seed"])
    assert [settle.blame(c)["settle_s"] for c in checks] == [f["settle_s"] for f in reported]


def test_blame_names_the_condition_of_the_last_bin_that_failed():
    settle = bench_script("scenario_settle")
    event = Event(1.0, "set_capacity", "a", 1)
    check = {"event": event, "bins": 4, "share": np.array([False, True, True, True]),
             "queue": np.array([True, False, True, True]), "no_failure": np.array([False, True, True, True])}
    assert settle.blame(check) == {"settle_s": 0.5, "held_by": ["queue"]}
    check["queue"] = None
    assert settle.blame(check) == {"settle_s": 0.25, "held_by": ["share", "failure"]}
    check["share"] = np.array([True, True, True, False])
    assert settle.blame(check) == {"settle_s": None, "held_by": ["share"]}
