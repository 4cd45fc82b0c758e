"""Replays one trace against a live local fleet, once per policy, resetting the fleet between policies."""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Tuple

from ..settings import HedgeSettings
from .baselines import (CheapestFirstSpill, LeastOutstandingP2C, PeakEwmaP2C, Restricted, RoundRobin, StaticWeights,
                        WeightedLeastRequest, slo_capable, static_weights_for)
from .loadgen import RequestRecord, replay
from .sampler import MetricsSampler, Sample, scrape_pending
from .scenario import ScenarioSpec
from .senders import BaselineSender, TritonmixSender, grpc_fleet
from .trace import ArrivalTrace, Event

__all__ = ["PolicyRun", "run_policy", "tritonmix_setup", "apply_event", "reset_fleet", "client_fleet", "start_events", "warm_up"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PolicyRun:
    """What one policy's replay produced."""

    policy: str
    records: List[RequestRecord]
    samples: List[Sample]
    decisions: List[Any]
    wall_s: float
    started_s: float = 0.0  # time.monotonic() when the trace started (the controller's decisions use that clock)


def client_fleet(local_fleet: Any, spec: ScenarioSpec) -> Any:
    """The live fleet as the clients address it: the servers' HTTP URLs, or their gRPC URLs for ``protocol: grpc``."""
    fleet = local_fleet.fleet
    if spec.protocol == "grpc":
        fleet = grpc_fleet(fleet, {name: local_fleet.endpoints[name].grpc_url for name in fleet.names})
    return fleet


def tritonmix_setup(policy: str, fleet: Any) -> Tuple[str, Any]:
    """A tritonmix policy's mode and fleet: ``tritonmix-<mode>`` runs the fleet as the scenario set it up (hedging
    included), ``tritonmix-auto-unhedged`` runs AUTO with the fleet's hedging off."""
    if policy == "tritonmix-auto-unhedged":
        return "auto", dataclasses.replace(fleet, controller=dataclasses.replace(fleet.controller,
                                                                                 hedge=HedgeSettings()))
    return policy.split("-", 1)[1], fleet


def make_sender(policy: str, local_fleet: Any, spec: ScenarioSpec) -> Any:
    fleet = client_fleet(local_fleet, spec)
    names = list(fleet.names)
    if policy in ("tritonmix-gateway", "paper-static-envoy"):  # through a real Envoy (gateway_sender.py)
        from .gateway_sender import GatewaySender

        weights = static_weights_for(names) if policy == "paper-static-envoy" else None
        return GatewaySender(local_fleet.fleet, spec.model, spec.request_timeout_s, static_weights=weights)
    if policy.startswith("tritonmix-"):
        mode, fleet = tritonmix_setup(policy, fleet)
        return TritonmixSender(fleet, mode, spec.model, spec.request_timeout_s, spec.seed)
    capable = slo_capable(fleet)
    pickers: Dict[str, Callable[[], Any]] = {
        "round-robin": lambda: RoundRobin(len(names)),
        "least-outstanding-p2c": lambda: LeastOutstandingP2C(len(names), seed=spec.seed),
        "paper-static-weights": lambda: StaticWeights(static_weights_for(names), seed=spec.seed),
        "cheapest-first-spill": lambda: CheapestFirstSpill(fleet),
        "weighted-least-request": lambda: WeightedLeastRequest(fleet, seed=spec.seed),
        "peak-ewma-p2c": lambda: Restricted(capable, PeakEwmaP2C(len(capable), tau_s=10.0 * spec.time_scale,
                                                                  seed=spec.seed)),
        "round-robin-slo": lambda: Restricted(capable, RoundRobin(len(capable))),
        "p2c-slo": lambda: Restricted(capable, LeastOutstandingP2C(len(capable), seed=spec.seed)),
    }
    if policy not in pickers:
        raise ValueError(f"unknown policy {policy!r} (known: tritonmix-auto|cost|capacity, {', '.join(pickers)})")
    return BaselineSender(fleet, pickers[policy](), spec.model, spec.request_timeout_s)


def apply_event(local_fleet: Any, event: Event) -> None:
    """Carry out one event on the live fleet."""
    if event.kind == "set_capacity":
        local_fleet.set_capacity(event.endpoint, int(event.value or 1))
    elif event.kind == "slow_down":
        local_fleet.slow_down(event.endpoint, float(event.value or 1.0))
    elif event.kind in ("kill", "reclaim"):  # a reclaim's at_s is the end of its notice: the pool vanishes
        local_fleet.kill(event.endpoint)
    elif event.kind == "restart":
        local_fleet.restart(event.endpoint)
    elif event.kind == "freeze":
        local_fleet.freeze(event.endpoint)
    elif event.kind == "thaw":
        local_fleet.thaw(event.endpoint)


def start_events(local_fleet: Any, events: List[Event], start: float, stop: threading.Event) -> threading.Thread:
    """A thread that carries out each event at ``start + event.at_s`` (monotonic) until ``stop`` is set."""
    def run() -> None:
        for event in events:
            if stop.wait(max(0.0, event.at_s - (time.monotonic() - start))):
                return
            try:
                apply_event(local_fleet, event)
                logger.info("t=%.2f s event %s %s", time.monotonic() - start, event.kind, event.endpoint)
            except Exception:  # noqa: BLE001 - an event that fails is logged, the replay goes on
                logger.exception("event %s on %s failed", event.kind, event.endpoint)

    thread = threading.Thread(target=run, name="scenario-events", daemon=True)
    thread.start()
    return thread


def run_policy(policy: str, local_fleet: Any, spec: ScenarioSpec, trace: ArrivalTrace) -> PolicyRun:
    """Replay ``trace`` through ``policy`` on ``local_fleet`` (which must be in its initial state)."""
    sender = make_sender(policy, local_fleet, spec)
    metrics_urls = {name: local_fleet.endpoints[name].metrics_url for name in local_fleet.fleet.names}
    warm_up(sender)
    sampler = MetricsSampler(metrics_urls, spec.model, period_s=0.25, parks=local_fleet.parks_out).start()
    stop = threading.Event()
    start = time.monotonic()
    events = start_events(local_fleet, list(trace.events), start, stop)
    try:
        records = replay(trace.arrivals_s, sender)
    finally:
        stop.set()
        events.join()
        samples = sampler.stop()
        decisions = sender.decisions() if hasattr(sender, "decisions") else []
        sender.close()
    return PolicyRun(policy, records, samples, decisions, time.monotonic() - start, start)


def warm_up(sender: Any, requests: int = 3) -> None:
    """A few requests before the clock starts (connections, readiness), not counted."""
    for _ in range(requests):
        try:
            sender()
        except Exception:  # noqa: BLE001 - warm-up failures are not the policy's
            pass


def reset_fleet(local_fleet: Any, spec: ScenarioSpec, original_concurrency: Dict[str, int]) -> None:
    """Back to the initial state: every endpoint up, at full capacity, normal speed, with an empty queue. The
    servers to restart (killed, reclaimed, frozen, or holding a queue) restart in parallel."""
    down = []
    for name in local_fleet.fleet.names:
        endpoint = local_fleet.endpoints[name]
        if endpoint.running and any(e.kind == "freeze" and e.endpoint == name for e in spec.events):
            # a server that was frozen starts afresh: after a SIGSTOP, Triton's python stub may be unhealthy and the
            # server may exit later, in the next policy's replay
            local_fleet.thaw(name)
            local_fleet.kill(name)
        if endpoint.running and scrape_pending(endpoint.metrics_url, spec.model) > 0:
            local_fleet.kill(name)  # a queue left by the last policy: drop it (a graceful stop would serve it out)
        if not endpoint.running:
            down.append(name)
    if down:
        with ThreadPoolExecutor(max_workers=len(down), thread_name_prefix="reset") as pool:
            list(pool.map(local_fleet.restart, down))
    for event in spec.events:
        if event.kind == "set_capacity":
            local_fleet.set_capacity(event.endpoint, original_concurrency[event.endpoint])
        elif event.kind == "slow_down":
            local_fleet.slow_down(event.endpoint, 1.0)
