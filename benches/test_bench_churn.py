"""Churn without servers: 1,000 endpoints, 50 joins or leaves per second for 60 s (issue 16's figure).

A real Router and Controller over a discovered set (``Router.apply_endpoints``, the whole set each time, as a
``tritonmix.discovery`` source reports it) in simulated time (FakeClock, no thread, no socket): four pools of 250
endpoints, one model, interactive requests at ``RATE_RPS`` completing after their pool's service time (no queueing:
the servers are not the subject). Every second, ``CHANGES_PER_S`` changes at evenly spaced times, alternating a join
(a new name in a random pool) and a leave of a random live endpoint: half the leaves drain first (terminating, then
gone ``DRAIN_S`` later, so a leave often lands with requests still out), the rest vanish at once. The controller
ticks every ``interval_s`` (0.5 s) and follows the set (``Controller.follow``).

The process's garbage collector as in ``tritonmix control-plane`` and ``tritonmix gateway`` (the plane's
configuration): ``tritonmix.heap.configure_collector()``, the function those commands call after start-up (freeze
what is alive, the youngest generation's threshold 10,000), runs once the Router and the Controller are built and
before the 1,000 endpoints join (as in a plane whose endpoints arrive by discovery after it started: they, and
everything the run builds, stay in the collector's view); the run unfreezes and restores the thresholds at its end.
One more churn run leaves the collector as it is (``plane_gc=False``: a controller inside a user's process, which
never changes the user's settings) and is reported beside, not judged against the target.

Measured, the churn run beside a static run of the same request stream over a fixed 1,000 (which reconciles the
unchanged set on the same schedule: the work between the steps, and the caches it leaves cold for the picks, is then
the same in both, and the difference is what churn does to the request path):
    pick+record   CPU time of the picks and records only (timed in batches of one 10 ms step, so the timer's own
                  cost is not in the figure), per request
    tick          CPU time of the ticking thread (``time.thread_time``; the bench runs one thread, so it equals the
                  process's ``process_time``, but in a plane the HTTP and discovery threads' CPU is not the tick's)
                  of every ``Controller.tick``: the whole step (follow the set, read the
                  signals, estimate, health, views, decide, apply the plan's weights and limits to the router's
                  dispatchers, publish the snapshot, whose rows are built on their first read), p50 / p95 / p99 /
                  max, garbage collections that land in a tick included, and p99 without the full (generation 2)
                  collections that land in a tick (they traverse every object the collector tracks: 18-28 ms
                  each over the unfrozen heap; in the plane's configuration few or none run); asserted: the
                  issue's target, p99 < 20 ms static and churn (``tick_target_met``; the median's is recorded,
                  ``tick_median_target_met``), and following the set adds at most FOLLOW_ALLOWANCE_MS to the
                  median
    reconcile     CPU time of each apply_endpoints of the whole set
    bad picks     picks of a slot whose endpoint had left or was draining when the pick was made (must be 0)
    late records  records of requests that were out on an endpoint when it left (each must land: none raises)

    .venv/bin/python -m pytest benches/test_bench_churn.py --benchmark-only -q -s
    .venv/bin/python benches/test_bench_churn.py        # the same figures, without pytest
"""
from __future__ import annotations

import gc
import heapq
import random
import statistics
import time
from typing import Any, Dict, List, Tuple

from tritonmix.controller import Controller
from tritonmix.controller.signals import NullSource
from tritonmix.controller.simulation import FakeClock
from tritonmix.discovery import EndpointState
from tritonmix.fleet import EndpointSpec, Fleet
from tritonmix.heap import configure_collector
from tritonmix.request import Router
from tritonmix.settings import ControllerSettings

N_ENDPOINTS = 1000
CHANGES_PER_S = 50
DURATION_S = 60.0
RATE_RPS = 2000.0
STEP_S = 0.01
DRAIN_S = 1.0
MODEL = "sd"
#: (pool, accelerator, $/hour, service time s, max_rps hint)
POOLS = (("inf2", "neuron", 0.7582, 0.067, 14.9), ("trn1", "trainium", 1.3438, 0.051, 19.6),
         ("g5", "gpu", 1.006, 0.068, 14.7), ("c7i", "cpu", 0.357, 0.4, 2.5))
TICK_TARGET_S = 0.020
COST_TOLERANCE = 0.10
ROUNDS = 3
#: what following the set may add to a tick's median CPU time (25 changes per 0.5 s tick)
FOLLOW_ALLOWANCE_MS = 5.0


#: CPU seconds of every full (generation 2) collection so far: every tracked object is traversed, most of it not
#: the controller's (the bench's requests, the router's reconciles), so the tick's tail is reported with and without
_FULL_GC = [0.0, 0.0]


def _on_gc(phase: str, info: Dict[str, int]) -> None:
    if info.get("generation") == 2:
        if phase == "start":
            _FULL_GC[1] = time.thread_time()
        else:
            _FULL_GC[0] += time.thread_time() - _FULL_GC[1]


gc.callbacks.append(_on_gc)


def endpoint(k: int, pool: int) -> EndpointSpec:
    name, acc, price, _, rps = POOLS[pool]
    return EndpointSpec(name=f"{name}-{k}", accelerator=acc, price_per_hour=price, url=f"10.{pool}.{k // 250}.{k % 250}:8000",
                        pool=name, max_rps=rps, max_concurrency=1)


class Run:
    """One simulated run; ``churn=False``: the same request stream over a fixed set. ``plane_gc``: the plane's
    collector configuration (module docstring); False: the collector as the process had it."""

    def __init__(self, churn: bool, seed: int = 1, duration_s: float = DURATION_S, plane_gc: bool = True) -> None:
        self.churn, self.duration_s, self.plane_gc = churn, duration_s, plane_gc
        self.rng = random.Random(seed)
        self.clock = FakeClock()
        fleet = Fleet(endpoints=(), slo_ms=600.0, mode="capacity", controller=ControllerSettings(interval_s=0.5))
        self.router = Router(fleet, seed=seed, clock=self.clock)
        self.controller = Controller(fleet, self.router, source=NullSource(0), clock=self.clock, jitter=0.0, seed=seed)
        self._thresholds = gc.get_threshold()
        if plane_gc:
            configure_collector()
        self.live: Dict[str, Tuple[EndpointSpec, bool]] = {}
        self.next_k = 0
        for k in range(N_ENDPOINTS):
            self._join(k % len(POOLS))
        self.router.apply_endpoints(self._states())
        self.service_s = {p[0]: p[3] for p in POOLS}
        self.out: List[Tuple[float, int, int, float]] = []  # (due, seq, slot, t0)
        self.seq = 0
        self.pick_record_s = 0.0
        self.requests = 0
        self.tick_s: List[float] = []
        self.tick_gc2_s: List[float] = []  # per tick: CPU time of the full (gen 2) collections that ran in it
        self.reconcile_s: List[float] = []
        self.bad_picks = 0
        self.late_records = 0
        self.gone_out: Dict[int, int] = {}
        self.draining: List[Tuple[float, str]] = []

    def _join(self, pool: int) -> None:
        spec = endpoint(self.next_k, pool)
        self.next_k += 1
        self.live[spec.name] = (spec, True)

    def _states(self) -> List[EndpointState]:
        return [EndpointState(spec, ready=True, terminating=not serving) for spec, serving in self.live.values()]

    def _change(self, n: int) -> None:
        if n % 2 == 0:
            self._join(self.rng.randrange(len(POOLS)))
        else:
            name = self.rng.choice([k for k, (_, serving) in self.live.items() if serving])
            if n % 4 == 1:
                self.live[name] = (self.live[name][0], False)  # terminating: drains, then leaves
                self.draining.append((self.clock() + DRAIN_S, name))
            else:
                del self.live[name]
        self._apply()

    def _apply(self) -> None:
        before = self.router.vacant()
        t0 = time.thread_time()
        self.router.apply_endpoints(self._states())
        self.reconcile_s.append(time.thread_time() - t0)
        d = self.router.dispatcher(MODEL)
        in_flight = d.stats().in_flight
        vacant = self.router.vacant()
        for i, (was, now) in enumerate(zip(before, vacant)):
            if now and not was and in_flight[i]:
                self.gone_out[i] = self.gone_out.get(i, 0) + in_flight[i]

    def run(self) -> "Run":
        lane = self.router.lane(MODEL)
        changes = 0
        next_tick = self.clock()
        start = self.clock()
        serving = self.router.serving()
        carry = 0.0
        while self.clock() - start < self.duration_s:
            now = self.clock()
            if now >= next_tick:
                full_gc = _FULL_GC[0]
                t0 = time.thread_time()
                self.controller.tick()
                self.tick_s.append(time.thread_time() - t0)
                self.tick_gc2_s.append(_FULL_GC[0] - full_gc)
                next_tick += 0.5
            while changes < (now - start) * CHANGES_PER_S:
                if self.churn:
                    self._change(changes)
                else:
                    self._apply()  # the same reconcile of the same set: the same work beside the picks, no change
                changes += 1
                while self.draining and self.draining[0][0] <= now:
                    _, name = self.draining.pop(0)
                    if name in self.live:
                        del self.live[name]
                        self._apply()
                serving = self.router.serving()
            carry += RATE_RPS * STEP_S
            k, carry = int(carry), carry - int(carry)
            self._step(lane, now, k, serving)
            self.clock.advance(STEP_S)
        self._drain_all(lane)
        if self.plane_gc:  # the next run configures its own start-up, not this run's leftovers
            gc.unfreeze()
            gc.set_threshold(*self._thresholds)
        return self

    def _step(self, lane: Any, now: float, k: int, serving: Tuple[bool, ...]) -> None:
        due = []
        while self.out and self.out[0][0] <= now:
            due.append(heapq.heappop(self.out))
        names = self.router.fleet.endpoints
        picks = [0] * k
        t0 = time.thread_time()
        for j in range(k):
            picks[j] = lane.pick()
        for _, _, i, started in due:
            lane.succeeded(i, started)
        self.pick_record_s += time.thread_time() - t0
        self.requests += k
        for i in picks:
            if not serving[i]:
                self.bad_picks += 1
            self.seq += 1
            heapq.heappush(self.out, (now + self.service_s[names[i].pool_name], self.seq, i, now))
        for _, _, i, _ in due:
            if self.gone_out.get(i):
                self.gone_out[i] -= 1
                self.late_records += 1

    def _drain_all(self, lane: Any) -> None:
        while self.out:
            _, _, i, started = heapq.heappop(self.out)
            lane.succeeded(i, started)
        assert sum(self.router.dispatcher(MODEL).stats().in_flight) == 0

    def figures(self) -> Dict[str, float]:
        ticks = sorted(self.tick_s)
        return {"pick_record_ns": self.pick_record_s / max(1, self.requests) * 1e9, "requests": self.requests,
                "tick_p50_ms": statistics.median(ticks) * 1e3, "tick_p95_ms": ticks[int(0.95 * (len(ticks) - 1))] * 1e3,
                "tick_p99_ms": ticks[int(0.99 * (len(ticks) - 1))] * 1e3,
                "tick_p99_no_gc2_ms": sorted(t - g for t, g in zip(self.tick_s, self.tick_gc2_s))[
                    int(0.99 * (len(ticks) - 1))] * 1e3,
                "ticks_with_gc2": sum(g > 0 for g in self.tick_gc2_s),
                "tick_max_ms": ticks[-1] * 1e3, "ticks": len(ticks),
                "reconcile_p50_ms": statistics.median(self.reconcile_s) * 1e3 if self.reconcile_s else 0.0,
                "reconciles": len(self.reconcile_s), "bad_picks": self.bad_picks, "late_records": self.late_records,
                "slots": self.router.dispatcher(MODEL).n_endpoints, "live": len(self.live)}


def compare(duration_s: float = DURATION_S, seed: int = 1,
            rounds: int = ROUNDS) -> Tuple[Dict[str, float], Dict[str, float], Dict[str, float]]:
    """``rounds`` static and churn runs, alternating (a shared machine's load drifts); each figure is the median
    over the rounds, and ``pick_record_ratio`` the median of the rounds' churn / static ratios. Then one churn run
    with the collector left as it is (``plane_gc=False``), its figures as they came."""
    runs = [(Run(churn=False, seed=seed, duration_s=duration_s).run().figures(),
             Run(churn=True, seed=seed, duration_s=duration_s).run().figures()) for _ in range(rounds)]
    static = {k: statistics.median(r[0][k] for r in runs) for k in runs[0][0]}
    churn = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
    churn["pick_record_ratio"] = statistics.median(c["pick_record_ns"] / s["pick_record_ns"] for s, c in runs)
    churn["bad_picks"] = max(c["bad_picks"] for _, c in runs)
    library = Run(churn=True, seed=seed, duration_s=duration_s, plane_gc=False).run().figures()
    return static, churn, library


def report(static: Dict[str, float], churn: Dict[str, float], library: Dict[str, float]) -> str:
    ratio = churn["pick_record_ratio"]
    return (f"pick+record: static {static['pick_record_ns']:.0f} ns, churn {churn['pick_record_ns']:.0f} ns per request "
            f"(median ratio of {ROUNDS} rounds x{ratio:.3f}); tick p50/p95/p99/max: static "
            f"{static['tick_p50_ms']:.1f}/{static['tick_p95_ms']:.1f}/{static['tick_p99_ms']:.1f}/"
            f"{static['tick_max_ms']:.1f} ms, churn {churn['tick_p50_ms']:.1f}/{churn['tick_p95_ms']:.1f}/"
            f"{churn['tick_p99_ms']:.1f}/{churn['tick_max_ms']:.1f} ms CPU (p99 without full collections: static "
            f"{static['tick_p99_no_gc2_ms']:.1f}, churn {churn['tick_p99_no_gc2_ms']:.1f} ms; ticks with one: "
            f"{static['ticks_with_gc2']:.0f} / {churn['ticks_with_gc2']:.0f}); reconcile p50 {churn['reconcile_p50_ms']:.2f} ms x "
            f"{churn['reconciles']}; bad picks {churn['bad_picks']}; late records {churn['late_records']}; "
            f"{churn['requests']} requests; slots {churn['slots']} for {churn['live']} live; collector untouched "
            f"(one churn run): tick p50/p95/p99/max {library['tick_p50_ms']:.1f}/{library['tick_p95_ms']:.1f}/"
            f"{library['tick_p99_ms']:.1f}/{library['tick_max_ms']:.1f} ms, p99 without full collections "
            f"{library['tick_p99_no_gc2_ms']:.1f} ms, ticks with one {library['ticks_with_gc2']:.0f}")


def test_churn_at_1000_endpoints(benchmark: Any) -> None:
    static, churn, library = benchmark.pedantic(compare, rounds=1, iterations=1)
    print("\n" + report(static, churn, library))
    benchmark.extra_info.update({f"static_{k}": v for k, v in static.items()})
    benchmark.extra_info.update({f"churn_{k}": v for k, v in churn.items()})
    benchmark.extra_info.update({f"library_{k}": v for k, v in library.items()})
    assert churn["bad_picks"] == 0
    assert churn["late_records"] > 0  # leaves did land with requests out, and their records landed
    # the target for the tick, in the plane's collector configuration: p99 < 20 ms, static and churn (met at
    # 13.5-18.1 ms in three runs of the current tick code; CPU time on a shared 2-core machine moves with the others'
    # load: pick+record per request, the same code path in every run, tells how loaded the machine was); the run with
    # the collector untouched is recorded only. What churn itself adds (Controller.follow) must stay small.
    p99_ms = max(static["tick_p99_ms"], churn["tick_p99_ms"])
    benchmark.extra_info["tick_target_met"] = p99_ms < TICK_TARGET_S * 1e3
    median_ms = max(static["tick_p50_ms"], churn["tick_p50_ms"])
    benchmark.extra_info["tick_median_target_met"] = median_ms < TICK_TARGET_S * 1e3
    assert p99_ms < TICK_TARGET_S * 1e3, (
        f"tick p99 {p99_ms:.1f} ms (static {static['tick_p99_ms']:.1f}, churn {churn['tick_p99_ms']:.1f}) is not under "
        f"{TICK_TARGET_S * 1e3:.0f} ms; pick+record took {static['pick_record_ns']:.0f} ns (398-549 ns in the runs "
        "that met it: a larger figure means a loaded machine)")
    assert churn["tick_p50_ms"] <= static["tick_p50_ms"] + FOLLOW_ALLOWANCE_MS
    assert churn["pick_record_ratio"] <= 1.0 + COST_TOLERANCE


if __name__ == "__main__":
    print(report(*compare()))
