"""Two policies of a scenario run compared seed by seed, from raw files alone (``tritonmix bench scenario``'s
``raw.json``, or the committed ``benches/results/scenario-quick*-raw.json.gz``).

Every policy of a run replays the same trace per seed, so the difference between two policies in one seed is a
paired comparison: the trace's own luck (its bursts, where its events fall in the wave) cancels out, which the
medians over seeds that ``summary.md`` reports do not do. Per (raw file, seed) pair: SLO attainment of each, the
difference in points, and the relative difference of goodput cost (busy time), ``B / A - 1``; then over all pairs
(several raw files of the same code pool their pairs): the median, the mean with a bootstrap 90% interval (10,000
resamples of the pairs, seeded), and in how many pairs B was the dearer / the better.

    .venv/bin/python benches/scenario_paired.py RAW [RAW ...] [--a tritonmix-cost] [--b tritonmix-auto]
    .venv/bin/python benches/scenario_paired.py RAW [RAW ...] --before RAW_BEFORE [--b tritonmix-auto]

``--before``: one policy across two runs (two revisions of the code, two settings), seed by seed: A is policy
``--b`` in ``RAW_BEFORE``, B the same policy in each RAW, paired on the seeds both ran.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
from typing import Any, Dict, List, Sequence, Tuple

from tritonmix.bench.run import read_raw as load
from tritonmix.bench.run import recompute


def pairs(raw: Dict[str, Any], a: str, b: str) -> List[Tuple[int, Dict[str, Any], Dict[str, Any]]]:
    """(seed, A's figures, B's figures) for every seed both policies ran in."""
    policies = recompute(raw)["policies"]
    missing = [p for p in (a, b) if p not in policies]
    if missing:
        raise SystemExit(f"policy {', '.join(missing)} not in this raw file (it has {', '.join(sorted(policies))})")
    return _matched(policies[a], policies[b])


def across(before: Dict[str, Any], after: Dict[str, Any], policy: str
           ) -> List[Tuple[int, Dict[str, Any], Dict[str, Any]]]:
    """(seed, the policy's figures in ``before``, its figures in ``after``) for every seed both runs have."""
    return _across(recompute(before)["policies"], recompute(after)["policies"], policy)


def _across(before: Dict[str, Any], after: Dict[str, Any], policy: str
            ) -> List[Tuple[int, Dict[str, Any], Dict[str, Any]]]:
    """``across`` on two recomputed summaries' ``policies``."""
    if policy not in before or policy not in after:
        raise SystemExit(f"policy {policy} is not in both raw files")
    return _matched(before[policy], after[policy])


def _matched(a: Dict[str, Any], b: Dict[str, Any]) -> List[Tuple[int, Dict[str, Any], Dict[str, Any]]]:
    """(seed, A's figures, B's figures) for the seeds of B's ``per_seed`` that A has too."""
    by_seed = {f["seed"]: f for f in a["per_seed"]}
    return [(f["seed"], by_seed[f["seed"]], f) for f in b["per_seed"] if f["seed"] in by_seed]


def interval(values: Sequence[float], resamples: int = 10000, seed: int = 0) -> Tuple[float, float]:
    """A bootstrap 90% interval of the mean."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int(0.05 * resamples)], means[int(0.95 * resamples) - 1]


def main(argv: Sequence[str] = ()) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", nargs="+")
    ap.add_argument("--a", default="tritonmix-cost", help="the reference policy")
    ap.add_argument("--b", default="tritonmix-auto", help="the policy compared with it")
    ap.add_argument("--before", metavar="RAW_BEFORE", help="compare policy --b in each RAW with itself in this one")
    args = ap.parse_args(argv or None)
    before = recompute(load(args.before))["policies"] if args.before else None  # once, for every RAW
    name_a, name_b = ("before", "after") if before is not None else (args.a, args.b)
    slo, cost = [], []
    print(f"{'raw file':<48} {'seed':>5} {name_a + ' SLO':>22} {name_b + ' SLO':>22} {'d pts':>6} {'d goodput':>9}")
    for path in args.raw:
        raw = load(path)
        matched = (pairs(raw, args.a, args.b) if before is None
                   else _across(before, recompute(raw)["policies"], args.b))
        for seed, fa, fb in matched:
            d_slo = 100.0 * (fb["slo_attainment"] - fa["slo_attainment"])
            d_cost = fb["goodput_cost_per_1k"] / fa["goodput_cost_per_1k"] - 1.0
            slo.append(d_slo)
            cost.append(d_cost)
            print(f"{path[-48:]:<48} {seed:>5} {100 * fa['slo_attainment']:>21.2f}% {100 * fb['slo_attainment']:>21.2f}%"
                  f" {d_slo:>+6.2f} {100 * d_cost:>+8.1f}%")
    if not slo:
        sys.exit("no seed that both policies ran in")
    lo, hi = interval(slo)
    print(f"\n{len(slo)} pairs; " + (f"{args.b} against {args.a}:" if before is None else
                                      f"{args.b} in these runs against {args.before}:"))
    print(f"  SLO, points: median {statistics.median(slo):+.2f}, mean {statistics.fmean(slo):+.2f} "
          f"(90% interval {lo:+.2f} .. {hi:+.2f}); better in {sum(d > 0 for d in slo)}, "
          f"worse in {sum(d < 0 for d in slo)}")
    lo, hi = interval(cost)
    print(f"  goodput cost: median {100 * statistics.median(cost):+.1f}%, mean {100 * statistics.fmean(cost):+.1f}% "
          f"(90% interval {100 * lo:+.1f}% .. {100 * hi:+.1f}%); dearer in {sum(d > 0 for d in cost)}, "
          f"cheaper in {sum(d < 0 for d in cost)}")


if __name__ == "__main__":
    main()
