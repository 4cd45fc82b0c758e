"""The paper's scenario: five emulated accelerator pools plus a CPU pool, a cosine wave of load, three events.

Every pool is one local Triton endpoint serving ``concurrency`` requests at once (an autoscaled pool of that many
accelerators). Latencies are the paper's figures times ``time_scale``; prices are per accelerator-hour.

The trace opens with a steady stretch (22 req/s, no events: above inf2's capacity of 17.9 req/s, well inside what
COST places on the five accelerators), where a policy that switches on an unsettled estimate pays for it; then the
cosine wave with the events (same for every policy): the cheapest pool (inf2) loses two thirds of its capacity and
later recovers; one endpoint (g5-triton) is killed under load; one (g6-triton) freezes (SIGSTOP) and thaws; one
(trn1) slows down; one pool (g5-cuda) is reclaimed as a spot instance (killed after a short notice).

The tritonmix policies run the fleet as we advise for an interactive SLO: hedged requests on (``HEDGE``: an
interactive request still unanswered after its endpoint's hedge delay gets one copy elsewhere, at most 10% of the
requests). ``tritonmix-auto-unhedged`` is AUTO with hedging off, kept beside it so the two can be compared; the
baselines do not hedge (none of the policies they model does by default).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from ..emulation.profiles import BUILTIN_PROFILES
from ..fleet import Fleet
from .oracle import UnitState
from .trace import ArrivalTrace, Event

__all__ = ["ScenarioSpec", "QUICK", "FULL", "POLICIES", "EXTRA_POLICIES", "HEDGE", "steady"]

#: endpoint name -> builtin profile; every pool serves CONCURRENCY requests at once
UNITS: Tuple[Tuple[str, str], ...] = (
    ("inf2", "inf2.xlarge"),
    ("trn1", "trn1.2xlarge"),
    ("g5-triton", "g5.xlarge-triton"),
    ("g6-triton", "g6.xlarge-triton"),
    ("g5-cuda", "g5.xlarge-cuda"),
    ("cpu", "c7i.2xlarge-cpu"),
)
CONCURRENCY = 3

#: policy name -> how it routes ("tritonmix:<mode>" or a baseline)
POLICIES: Tuple[str, ...] = (
    "tritonmix-auto",
    "tritonmix-cost",
    "tritonmix-capacity",
    "round-robin",
    "least-outstanding-p2c",
    "paper-static-weights",
)
#: the baselines a practitioner would configure (``baselines``), run on request (``--policies``): not yet in the
#: default list, which ``make demo`` replays in under three minutes
EXTRA_POLICIES: Tuple[str, ...] = (
    "cheapest-first-spill",
    "weighted-least-request",
    "peak-ewma-p2c",
    "round-robin-slo",
    "p2c-slo",
    "tritonmix-gateway",
    "paper-static-envoy",
    "tritonmix-auto-unhedged",
)

#: the tritonmix policies' ``controller.hedge`` section: hedge at most 10% of the requests (the budget against the
#: SLO gained: benches/results/scenario-quick.md)
HEDGE: Dict[str, Any] = {"max_share": 0.1}


@dataclasses.dataclass(frozen=True)
class ScenarioSpec:
    """One replay's settings; ``QUICK`` and ``FULL`` are the two presets."""

    name: str
    duration_s: float
    base_rps: float
    peak_rps: float
    events: Tuple[Event, ...]
    time_scale: float = 0.25
    slo_ms: float = 600.0
    interval_s: float = 0.25
    request_timeout_s: float = 10.0
    seed: int = 2024
    #: the steady stretch that opens the trace (seconds, req/s; 0: none)
    steady_s: float = 0.0
    steady_rps: float = 0.0
    model: str = "stable_diffusion"
    #: every policy's client speaks this protocol to the fleet (gRPC: a hedge's losing copy can be cancelled)
    protocol: str = "http"
    #: the tritonmix policies' ``controller.hedge`` section (None: no hedging; ``tritonmix-auto-unhedged`` never
    #: hedges)
    hedge: Optional[Dict[str, Any]] = dataclasses.field(default_factory=lambda: dict(HEDGE))
    #: more of the tritonmix policies' ``controller`` section (``--controller KEY=VALUE``: a setting to try), over
    #: the scenario's own; empty: the library's defaults
    controller: Dict[str, Any] = dataclasses.field(default_factory=dict)
    #: the pools: (endpoint name, builtin profile) each, serving ``concurrency`` requests at once
    pools: Tuple[Tuple[str, str], ...] = UNITS
    concurrency: int = CONCURRENCY
    #: the emulated models stop a request its client cancelled (gRPC); False: they run it to its end (the profile's
    #: ``cancellable``; raw files from before it ran on models that ignored cancellation)
    cancellable: bool = True

    def trace(self) -> ArrivalTrace:
        return ArrivalTrace.build(self.duration_s, self.base_rps, self.peak_rps, self.duration_s - self.steady_s,
                                  self.events, self.seed, self.steady_s, self.steady_rps)

    def fleet_dict(self, mode: str = "auto") -> Dict[str, Any]:
        endpoints: List[Dict[str, Any]] = []
        for name, profile_name in self.pools:
            profile = BUILTIN_PROFILES[profile_name]
            endpoints.append({
                "name": name,
                "accelerator": profile.accelerator,
                "instance_type": profile.instance_type,
                "price_per_hour": profile.price_per_hour,
                "profile": {"base": profile_name, "concurrency": self.concurrency,
                            **({} if self.cancellable else {"cancellable": False})},
                "max_concurrency": self.concurrency,
                "max_rps": round(self.concurrency / (profile.latency_s * self.time_scale), 3),
            })
        return {
            "slo_ms": self.slo_ms,
            "mode": mode,
            "time_scale": self.time_scale,
            # the controller's time constants follow the scenario's time scale, as a user running a 4x faster
            # fleet would set them: the tick (interval_s) and AUTO's dwell (default 5 s -> 5 x time_scale)
            "controller": dict({"interval_s": self.interval_s, "dwell_s": round(5.0 * self.time_scale, 3)},
                               **({"hedge": dict(self.hedge)} if self.hedge is not None else {}),
                               **self.controller),
            "endpoints": endpoints,
        }

    def fleet(self, mode: str = "auto") -> Fleet:
        return Fleet.from_dict(self.fleet_dict(mode))

    def units(self) -> List[UnitState]:
        """The oracle's view of the pools before any event."""
        return [
            UnitState(name, BUILTIN_PROFILES[p].price_per_hour, BUILTIN_PROFILES[p].latency_s * self.time_scale,
                      self.concurrency)
            for name, p in self.pools
        ]


QUICK = ScenarioSpec(
    name="quick",
    duration_s=18.0,
    base_rps=8.0,
    peak_rps=34.0,
    steady_s=4.0,
    steady_rps=22.0,
    events=(
        Event(5.0, "set_capacity", "inf2", 1, "inf2 loses 2/3 of its capacity"),
        Event(7.0, "kill", "g5-triton", None, "g5-triton killed"),
        Event(9.0, "set_capacity", "inf2", CONCURRENCY, "inf2 capacity returns"),
        Event(10.5, "freeze", "g6-triton", None, "g6-triton freezes"),
        Event(12.0, "thaw", "g6-triton", None, "g6-triton thaws"),
        Event(13.5, "slow_down", "trn1", 3.0, "trn1 slows down 3x"),
        Event(16.0, "reclaim", "g5-cuda", 0.5, "g5-cuda reclaimed (spot, 0.5 s notice)"),
    ),
)

FULL = ScenarioSpec(
    name="full",
    duration_s=72.0,
    base_rps=8.0,
    peak_rps=34.0,
    steady_s=12.0,
    steady_rps=22.0,
    events=(
        Event(20.0, "set_capacity", "inf2", 1, "inf2 loses 2/3 of its capacity"),
        Event(28.0, "kill", "g5-triton", None, "g5-triton killed"),
        Event(36.0, "set_capacity", "inf2", CONCURRENCY, "inf2 capacity returns"),
        Event(42.0, "freeze", "g6-triton", None, "g6-triton freezes"),
        Event(45.0, "thaw", "g6-triton", None, "g6-triton thaws"),
        Event(50.0, "slow_down", "trn1", 3.0, "trn1 slows down 3x"),
        Event(56.0, "restart", "g5-triton", None, "g5-triton back"),
        Event(64.0, "reclaim", "g5-cuda", 2.0, "g5-cuda reclaimed (spot, 2 s notice)"),
    ),
)


def steady(load_rps: float, duration_s: float, pools: int = 5, seed: int = 2024) -> ScenarioSpec:
    """A steady Poisson load of ``load_rps`` on the first ``pools`` pools (five: the paper's accelerators, no CPU),
    one accelerator each, at time_scale 0.1 with a 150 ms SLO and no events. At 16 req/s that is above the cheapest
    pool's capacity (inf2: 1 / 67 ms = 14.9 req/s) and well inside the five pools' (70 req/s): COST has to spill
    onto the next-cheapest pools, the load at which many clients deciding alone can herd."""
    return ScenarioSpec(name=f"steady-{load_rps:g}rps", duration_s=duration_s, base_rps=load_rps, peak_rps=load_rps,
                        events=(), time_scale=0.1, slo_ms=150.0, interval_s=0.1, seed=seed, pools=UNITS[:pools],
                        concurrency=1)
