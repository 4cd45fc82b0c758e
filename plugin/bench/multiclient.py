"""``run_clients``: one local fleet, one trace, split over N client processes, once per client setup.

Setups are named ``n<N>`` or ``n<N>-local`` (N clients, each deciding with its own local controller) and
``n<N>-plane`` (N clients following one control plane, ``tritonmix.control_plane.ControlPlane``, that the parent
process starts over the same fleet and stops after the replay). Every setup replays the same trace with the same
start time in all its processes (``workers``); the parent samples the servers' metrics and carries out the trace's
events on the same schedule, and resets the fleet between setups as the scenario does between policies.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .analysis import policy_figures
from .fleetwide import (cheapest_pool, cheapest_share, clients_floor_checks, clients_table, controller_figures,
                        disturbed_endpoints)
from .loadgen import RequestRecord
from .report import plot_runs, write_raw, write_summary
from .run import COST_MODEL, raw_of, series_of
from .runner import client_fleet, reset_fleet, start_events
from .sampler import MetricsSampler, Sample
from .scenario import ScenarioSpec
from .trace import ArrivalTrace
from .workers import ClientJob, ControllerCounters, run_client_processes, split_round_robin

__all__ = ["Setup", "parse_setups", "plane_missing", "run_clients", "SPLIT", "DEFAULT_SETUPS"]

logger = logging.getLogger(__name__)

SPLIT = "round-robin by arrival index (arrival k to client k mod N)"
DEFAULT_SETUPS = "n1,n8-plane,n8-local"
_SETUP = re.compile(r"^n([1-9][0-9]*)(-local|-plane)?$")


@dataclasses.dataclass(frozen=True)
class Setup:
    """``clients`` client processes, following one control plane (``plane``) or each deciding alone."""

    name: str
    clients: int
    plane: bool


def parse_setups(text: str) -> List[Setup]:
    """``"n1,n8-plane,n8-local"`` -> Setups; ValueError naming a malformed or repeated one."""
    setups: List[Setup] = []
    for name in (part.strip() for part in text.split(",") if part.strip()):
        match = _SETUP.match(name)
        if match is None:
            raise ValueError(f"setup {name!r}: expected n<N>, n<N>-local or n<N>-plane (e.g. n1,n8-plane,n8-local)")
        if any(s.name == name for s in setups):
            raise ValueError(f"setup {name!r} is given twice")
        setups.append(Setup(name, int(match.group(1)), match.group(2) == "-plane"))
    if not setups:
        raise ValueError("no setup given")
    return setups


def plane_missing() -> Optional[str]:
    """Why a ``-plane`` setup cannot run here (``tritonmix.control_plane.ControlPlane`` cannot be imported), None
    when it can."""
    try:
        module = importlib.import_module("..control_plane", __package__)
    except ImportError as exc:
        reason = str(exc)
    else:
        if hasattr(module, "ControlPlane"):
            return None
        reason = "it has no ControlPlane"
    return (f"the control plane is missing: tritonmix.control_plane.ControlPlane cannot be imported ({reason}), so "
            f"the -plane setups cannot run (run n1 and n<N>-local setups only)")


@dataclasses.dataclass
class SetupRun:
    """What one setup's replay produced: the merged records (in arrival order), the servers' samples, every
    controller's decisions as (monotonic time, kind, endpoint, summary), and the controllers' counters."""

    setup: Setup
    records: List[RequestRecord]
    samples: List[Sample]
    decisions: List[Tuple[float, str, Optional[str], str]]
    client_counters: List[ControllerCounters]
    plane_counters: Optional[ControllerCounters]
    started_s: float
    wall_s: float


def _plane_counters(plane: Any) -> ControllerCounters:
    """The plane's ticks and per-endpoint scrapes so far (``status()``; scrapes None where it does not count)."""
    status = plane.status()
    scrapes = status["scrapes"]
    return ControllerCounters(int(status["ticks"]), None if scrapes is None else tuple(int(x) for x in scrapes))


def _start_plane(fleet: Any) -> Any:
    from ..control_plane import ControlPlane

    return ControlPlane(fleet, listen="127.0.0.1:0").start()


def run_setup(setup: Setup, local_fleet: Any, spec: ScenarioSpec, trace: ArrivalTrace, mode: str) -> SetupRun:
    """Replay ``trace`` split over ``setup.clients`` processes on ``local_fleet`` (in its initial state); the
    plane, the sampler and the events end with it, whatever happened."""
    fleet = dataclasses.replace(client_fleet(local_fleet, spec), mode=mode)
    metrics_urls = {name: local_fleet.endpoints[name].metrics_url for name in fleet.names}
    shares = split_round_robin(trace.arrivals_s, setup.clients)
    live: Dict[str, Any] = {"stop": threading.Event(), "plane": None}

    def on_start(start_s: float) -> None:
        time.sleep(max(0.0, start_s - time.monotonic()))
        live["start_s"] = start_s
        live["sampler"] = MetricsSampler(metrics_urls, spec.model, period_s=0.25, parks=local_fleet.parks_out).start()
        live["events"] = start_events(local_fleet, list(trace.events), start_s, live["stop"])
        if live["plane"] is not None:
            live["plane_before"] = _plane_counters(live["plane"])

    plane_counters, decisions = None, []
    try:
        plane = live["plane"] = _start_plane(fleet) if setup.plane else None
        jobs = [ClientJob(k, fleet, mode, spec.model, spec.request_timeout_s, spec.seed + k, shares[k],
                          None if plane is None else plane.address) for k in range(setup.clients)]
        results = run_client_processes(jobs, on_start, spec.duration_s + spec.request_timeout_s + 60.0)
        if plane is not None:
            plane_counters = _plane_counters(plane).since(live["plane_before"])
            decisions = [(d.at_s, d.kind, d.endpoint, d.summary) for d in plane.controller.decisions()
                         if d.at_s >= live["start_s"]]
    finally:
        live["stop"].set()
        if "events" in live:
            live["events"].join()
        samples = live["sampler"].stop() if "sampler" in live else []
        if live["plane"] is not None:
            live["plane"].stop()
    records = sorted((r for result in results for r in result.records), key=lambda r: r.arrival_s)
    decisions += [d for result in results for d in result.decisions]
    return SetupRun(setup, records, samples, sorted(decisions, key=lambda d: d[0]), [r.counters for r in results],
                    plane_counters, live["start_s"], time.monotonic() - live["start_s"])


def setup_figures(run: SetupRun, spec: ScenarioSpec, trace: ArrivalTrace, fleet: Any) -> Dict[str, Any]:
    """``policy_figures`` of the merged replay plus the fleet-wide figures of ``fleetwide``."""
    names = list(fleet.names)
    prices = {e.name: e.price_per_hour for e in fleet.endpoints}
    fig = policy_figures(run.records, run.samples, prices, names, trace.events, fleet.slo_s, spec.duration_s,
                         spec.units())
    share = cheapest_share(run.samples, names, cheapest_pool(spec.units()), spec.duration_s)
    scrapes = [c.scrapes for c in run.client_counters]
    if run.plane_counters is not None:
        scrapes.append(run.plane_counters.scrapes)
    fig.update({
        "clients": run.setup.clients,
        "plane": run.setup.plane,
        "cheapest_share_mean": share["mean"],
        "cheapest_share_std": share["std"],
        "cheapest_share_bins": share["bins"],
        "disturbed": disturbed_endpoints(trace.events, run.samples),
        **controller_figures(run.decisions, [c.ticks for c in run.client_counters], scrapes,
                             None if run.plane_counters is None else run.plane_counters.ticks, names),
    })
    return fig


def run_clients(spec: ScenarioSpec, out_dir: Path, setups: Sequence[Setup], mode: str = "auto",
                progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Start the fleet, replay the trace once per setup, write summary.json / summary.md / raw.json / plots;
    return the summary. RuntimeError before anything starts when a -plane setup is asked for and the control plane
    is missing."""
    from ..local import LocalFleet

    missing = plane_missing() if any(s.plane for s in setups) else None
    if missing:
        raise RuntimeError(missing)
    say = progress or (lambda message: logger.info(message))
    trace, fleet = spec.trace(), spec.fleet(mode)
    names = list(fleet.names)
    prices = {e.name: e.price_per_hour for e in fleet.endpoints}
    original = {e.name: int(e.max_concurrency or 1) for e in fleet.endpoints}
    figures: Dict[str, Any] = {}
    series: Dict[str, Any] = {}
    raw: Dict[str, Any] = {}
    with LocalFleet(fleet) as local_fleet:
        say(f"fleet of {len(names)} EMULATED endpoints up; {len(trace.arrivals_s)} requests over "
            f"{spec.duration_s:g} s per setup, split {SPLIT}")
        for k, setup in enumerate(setups):
            if k:
                reset_fleet(local_fleet, spec, original)
            run = run_setup(setup, local_fleet, spec, trace, mode)
            figures[setup.name] = f = setup_figures(run, spec, trace, fleet)
            series[setup.name] = series_of(run.records, run.samples, names, prices, spec.duration_s)
            raw[setup.name] = raw_of(run.records, run.samples, [(d[0], d[1], d[3]) for d in run.decisions],
                                     run.started_s)
            say(f"{setup.name:<10} SLO {f['slo_attainment'] * 100:6.2f}%  errors {f['errors']:4d}  "
                f"p99 {f['p99_s']:.3f} s  ${f['cost_per_1k']:.4f}/1k  ({run.wall_s:.0f} s)")
    summary: Dict[str, Any] = {
        "load": {**dataclasses.asdict(spec), "mode": mode, "requests": len(trace.arrivals_s), "emulated": True},
        "split": SPLIT,
        "cost_model": COST_MODEL,
        "cheapest_pool": cheapest_pool(spec.units()),
        "setups": figures,
    }
    summary["floors"] = clients_floor_checks(figures)
    out_dir = Path(out_dir)
    write_summary(summary, out_dir, clients_table)
    write_raw(raw, names, trace, out_dir)
    plot_runs(series, names, trace.events, out_dir)
    return summary
