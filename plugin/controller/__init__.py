"""The policy layer: a control loop that sets the dispatchers' weights from live cost and capacity signals.

    start_controller(fleet, router)   the clients' integration point: a running Controller, or None when
                                      ``fleet.controller.enabled`` is false; ``probe_settings=`` (ProbeSettings:
                                      the client's TLS settings and probe headers) for its probes and scrapes;
                                      with ``fleet.control_plane`` set, a running ``control_plane.Follower`` (it
                                      applies the plane's plans and runs a Controller only while none come)
    Controller                        the loop (tritonmix.controller.loop): tick(), start(), stop(), decisions(),
                                      snapshot(), plan, registry (its own prometheus_client CollectorRegistry);
                                      its parts: observer.Observer (signals -> views), decider.Decider (views ->
                                      Plan), applier.Applier (Plan -> router)
    Plan                              the decision as a value (tritonmix.controller.plan): numbered, JSON round trip
    policy / estimators / plugins     the pure parts: modes, ejection, capacity and demand estimators; the plug-in
                                      points (filters/, scorers/, pickers/)
    per_model                         capacity per (endpoint, model), one plan per model (Triton: one instance
                                      group, queue and series per model)
Ejection has one holder while a controller runs, its OutlierDetector: the Router reports request-path failures to
it (``Router.set_ejector``) instead of ejecting by itself.
    simulation                        a synthetic fleet in simulated time, for tests and benchmarks
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional, Union

from . import filters, pickers, scorers  # noqa: F401 - the built-in plug-ins register themselves
from .decisions import Decision
from .loop import Controller, PriceFeed
from .model import AUTO, BATCH, CAPACITY, COST, INTERACTIVE, EndpointView, ModelPlan
from .plan import Plan
from .plugins import Filter, Picker, Scorer, register_filter, register_picker, register_scorer
from .probes import ProbeSettings

__all__ = [
    "start_controller", "Controller", "Decision", "PriceFeed", "Plan", "ModelPlan", "EndpointView", "ProbeSettings",
    "Scorer", "Filter", "Picker", "register_scorer", "register_filter", "register_picker",
    "COST", "CAPACITY", "AUTO", "INTERACTIVE", "BATCH",
]


def start_controller(fleet: Any, router: Any, *, clock: Callable[[], float] = time.monotonic,
                     prices: Optional[PriceFeed] = None,
                     metrics_urls: Optional[Mapping[str, str]] = None,
                     probe_settings: Optional[ProbeSettings] = None) -> Optional[Union[Controller, Any]]:
    """Build a Controller over ``router``, run its first tick, start its daemon thread (every
    ``fleet.controller.interval_s``) and return it; None when ``fleet.controller.enabled`` is false.
    The caller stops it with ``.stop()``."""
    if not fleet.controller.enabled:
        return None

    def local() -> Controller:
        return Controller(fleet, router, clock=clock, prices=prices, metrics_urls=metrics_urls,
                          probe_settings=probe_settings)

    plane = getattr(fleet, "control_plane", None)
    if plane is not None:
        from ..control_plane.follower import Follower  # noqa: PLC0415 - only clients that follow a plane need it

        return Follower(fleet, router, plane.replicas, local, token=plane.token(), ca_file=plane.ca_file,
                        load_channel=plane.load_channel, clock=clock).start()
    return local().start()
