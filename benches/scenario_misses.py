"""Where a scenario run's SLO misses are, from its ``raw.json`` alone (``tritonmix bench scenario``'s raw file, or the
committed ``benches/results/scenario-quick-raw.json.gz``): per policy and seed, the requests that failed or answered
after the SLO, each put on the event whose endpoint got its first attempt and whose window (from one SLO before the
event, a request still in flight at it, to the next event on that endpoint) holds its arrival, else on "other"; with how many of them were sent again (rescue or retry: more than
one attempt recorded), and the seconds AUTO spent in CAPACITY mode (its ``mode`` decisions).

    .venv/bin/python benches/scenario_misses.py RAW [--policy tritonmix-auto] [-v]

``-v``: every miss (arrival s, latency s, endpoints tried). Hedged runs record no endpoints per request: their misses
are all "other".
"""
from __future__ import annotations

import argparse
import collections
from typing import Any, Dict, List, Tuple

from tritonmix.bench.run import read_raw as load


def windows(scenario: Dict[str, Any]) -> List[Tuple[float, float, str, str]]:
    """(start s, end s, endpoint, label) per event: from the event to the next event on its endpoint (else the
    end of the trace)."""
    events = sorted(scenario["events"], key=lambda e: e["at_s"])
    out = []
    for k, e in enumerate(events):
        end = next((later["at_s"] for later in events[k + 1:] if later["endpoint"] == e["endpoint"]),
                   scenario["duration_s"])
        out.append((e["at_s"], end, e["endpoint"], e["label"]))
    return out


def attribute(run: Dict[str, Any], spans: List[Tuple[float, float, str, str]], slo_s: float,
              end_s: float) -> Dict[str, Any]:
    by_event: Dict[str, int] = collections.Counter()
    missed, resent = [], 0
    for arrival_s, latency_s, ok, _error, endpoints in run["requests"]:
        if ok and latency_s <= slo_s:
            continue
        first = endpoints[0] if endpoints else None
        label = next((lab for start, end, ep, lab in spans if ep == first and start - slo_s <= arrival_s < end),
                     "other")
        by_event[label] += 1
        resent += len(endpoints) > 1
        missed.append((arrival_s, latency_s, endpoints))
    return {"requests": len(run["requests"]), "misses": len(missed), "resent": resent, "by_event": dict(by_event),
            "capacity_s": capacity_seconds(run["decisions"], end_s), "missed": missed}


def capacity_seconds(decisions: List[List[Any]], end_s: float) -> float:
    """Seconds in CAPACITY mode from the ``mode`` decisions ("mode A -> B: ...")."""
    total, since = 0.0, None
    for t_s, kind, summary in decisions:
        if kind != "mode":
            continue
        if "-> capacity" in summary and since is None:
            since = t_s
        elif "-> cost" in summary and since is not None:
            total, since = total + t_s - since, None
    return total + (end_s - since if since is not None else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw")
    ap.add_argument("--policy", default="tritonmix-auto")
    ap.add_argument("-v", action="store_true", help="every miss")
    a = ap.parse_args()
    raw = load(a.raw)
    spans, slo_s = windows(raw["scenario"]), raw["scenario"]["slo_ms"] / 1000.0
    for run in sorted((r for r in raw["runs"] if r["policy"] == a.policy), key=lambda r: r["seed"]):
        f = attribute(run, spans, slo_s, raw["scenario"]["duration_s"])
        share = 1.0 - f["misses"] / max(1, f["requests"])
        events = ", ".join(f"{label}: {n}" for label, n in sorted(f["by_event"].items(), key=lambda kv: -kv[1]))
        print(f"{a.policy} seed {run['seed']}: {f['requests']} requests, SLO {100 * share:.2f}%, {f['misses']} misses "
              f"({f['resent']} sent again) [{events}], CAPACITY {f['capacity_s']:.1f} s")
        if a.v:
            for arrival_s, latency_s, endpoints in f["missed"]:
                print(f"    {arrival_s:6.2f} s  {latency_s:.3f} s  {endpoints}")


if __name__ == "__main__":
    main()
