"""What every drop-in client holds: its fleet (from ``url=`` or ``fleet=``), router, engine, sequence pins,
readiness refresher and controller, and the public read-outs of them (``EndpointReport``)."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from typing import Any, Callable, List, Mapping, Optional, Tuple

from ..controller import start_controller
from ..errors import ConfigError
from ..fleet import Fleet
from ..settings import ControlPlaneSettings
from ..request import Engine, Router, SequencePins, Sequences
from ..request.engine import Classifier
from ..discovery import source_for
from .churn import check_protocol
from .readiness import Probe, ReadinessRefresher

__all__ = ["resolve_fleet", "ClientCore", "EndpointReport"]

logger = logging.getLogger(__name__)


def resolve_fleet(url: Optional[str], fleet: Optional[Fleet], protocol: str, control_plane: Any = None) -> Fleet:
    """``fleet=`` as given, else ``url=``: a fleet file path, or one ``host:port`` or a comma-separated list. Local
    endpoints (no url) get the URLs of the fleet that ``tritonmix fleet up`` runs for the file
    (``tritonmix.local.supervisor.attach``). ``control_plane=`` ("host:port", a list of replicas, or a
    ``ControlPlaneSettings``) replaces the fleet's ``control_plane`` (its token and CA settings stay when only
    addresses are given)."""
    if fleet is None:
        if not url:
            raise ConfigError("give url= (host:port, a comma-separated list, or a fleet file) or fleet=")
        is_file = url.endswith((".yaml", ".yml", ".json")) or os.path.isfile(url)
        fleet = Fleet.from_file(url) if is_file else Fleet.from_urls(url, protocol=protocol)
    if any(e.url is None for e in fleet.endpoints):
        from ..local.supervisor import attach  # noqa: PLC0415 - only for fleets with local endpoints

        fleet = attach(fleet, protocol)
    if control_plane is not None:
        given = ControlPlaneSettings.from_value(control_plane)
        if fleet.control_plane is not None and not isinstance(control_plane, (ControlPlaneSettings, Mapping)):
            given = dataclasses.replace(fleet.control_plane, replicas=given.replicas)
        fleet = dataclasses.replace(fleet, control_plane=given)
    wrong = [e.name for e in fleet.endpoints if e.protocol != protocol]
    if wrong:
        raise ConfigError(f"endpoints {', '.join(wrong)} are not {protocol} endpoints; a {protocol} client needs "
                          f"{protocol} URLs")
    return fleet


@dataclasses.dataclass(frozen=True)
class EndpointReport:
    """How one endpoint's attempts went for this client, over every model and request class so far."""

    name: str
    url: str
    attempts: int           # picks: every attempt sent (retries and hedges included)
    succeeded: int
    failed: int             # attempts that failed (any reason; a server's error about the request included)
    over_slo: int           # interactive successes slower than the SLO
    in_flight: int
    ewma_latency_s: float   # NaN before the first success (the busiest dispatcher's figure)
    available: bool         # takes new requests now (not ejected, not masked by the controller)
    rescued: int = 0        # rescue copies sent because an attempt here got no answer (tritonmix.request.rescue)


#: why a client that follows a control plane does not take endpoint sets of its own
_PLANE_CHURN = ("a client that follows a control plane takes its endpoints from the plane (a discovering plane sends "
                "its set with its plans); apply_endpoints is for clients that decide locally (no control_plane)")


class ClientCore:
    """The router, engine, sequences, readiness refresher and controller of one client."""

    def __init__(self, fleet: Fleet, classify: Classifier, unavailable_status: str, *, seed: Optional[int],
                 clock: Callable[[], float], probe: Optional[Probe], readiness_interval_s: float,
                 on_not_found: Optional[Callable[[str], None]] = None,
                 on_probe_thread_exit: Optional[Callable[[], None]] = None, probe_settings: Any = None) -> None:
        self.fleet = fleet
        self.router = Router(fleet, seed=seed, clock=clock)
        self.readiness = ReadinessRefresher(self.router, probe, interval_s=readiness_interval_s, clock=clock,
                                            on_thread_exit=on_probe_thread_exit) if probe is not None else None
        if self.readiness is not None:  # the aio clients probe from their event loop instead
            self.router.add_listener(self.readiness.on_new_dispatcher)
            on_not_found = self.readiness.request_refresh
        self.engine = Engine(self.router, classify, unavailable_status=unavailable_status, clock=clock,
                             on_not_found=on_not_found)
        self.pins = SequencePins(len(fleet.endpoints))
        self.sequences = Sequences(self.engine, self.pins)
        self._probe_settings = probe_settings
        #: a client that follows a plane starts its Follower once its per-endpoint clients follow the router's set
        #: (``follow_endpoints``): the plane's first answer may bring a set
        self.controller: Any = start_controller(fleet, self.router, probe_settings=probe_settings) \
            if fleet.control_plane is None else None
        #: the fleet's discovery source (``endpoints: {kubernetes: ...}``), started by ``follow_endpoints``; a
        #: follower of a discovering plane runs one only while its own controller decides (``_plane_fallback``)
        self.source: Any = None
        self._protocol = ""
        self._source_lock = threading.Lock()
        self._own_set = False

    def follow_endpoints(self, listener: Callable[[Any], None], protocol: str) -> None:
        """Wire the protocol's per-endpoint clients to the router's set (``listener(change)``, see
        ``tritonmix.clients.churn``), then start the fleet's discovery source, if it names one, or the Follower of
        the control plane the fleet names (a follower takes the plane's set: ``control_plane.follower``)."""
        self._protocol = protocol
        self.router.add_endpoints_listener(listener)
        self.pins.follow_router(self.router)
        if self.fleet.control_plane is not None:
            self.controller = start_controller(self.fleet, self.router, probe_settings=self._probe_settings)
            if self.fleet.discovery is not None and hasattr(self.controller, "on_fallback"):
                self.controller.on_fallback(self._plane_fallback)
            return
        self.source = source_for(self.fleet)
        if self.source is not None:
            self.source.start(self._discovered)

    def apply_endpoints(self, states: Any) -> Any:
        """Follow a whole discovered set (``tritonmix.clients.churn``); ConfigError for an endpoint of another
        protocol or for a client that follows a control plane, ValueError for a duplicate name or a missing url
        (nothing changes then)."""
        if self.fleet.control_plane is not None:
            raise ConfigError(_PLANE_CHURN)
        if self._protocol:
            check_protocol(states, self._protocol)
        return self.router.apply_endpoints(states)

    def _plane_fallback(self, local: bool) -> None:
        """A follower of a discovering plane (``Follower.on_fallback``): while its own controller decides, its own
        source keeps the router's set; once it follows again, the plane's set rules (the source's later reports are
        dropped and it stops in the background)."""
        with self._source_lock:
            if local and getattr(self.controller, "local", None) is None:
                return  # it follows a plane again already (the two calls crossed)
            self._own_set = local
            source = self.source
            if local and source is None:
                self.source = source = source_for(self.fleet)
                try:
                    source.start(self._discovered_own)
                except Exception:  # noqa: BLE001 - the plane's last set stays
                    logger.exception("the fleet's discovery source did not start")
                    self.source = None
            elif not local and source is not None:
                self.source = None
                threading.Thread(target=source.stop, name="tritonmix-source-stop", daemon=True).start()

    def _discovered_own(self, states: Any) -> None:
        """The own source's ``on_change`` while a follower's controller decides alone."""
        with self._source_lock:
            if not self._own_set:
                return
            try:
                check_protocol(states, self._protocol)
                self.router.apply_endpoints(states)
            except (ConfigError, ValueError) as exc:
                logger.error("discovered endpoints not applied: %s", exc)

    def _discovered(self, states: Any) -> None:
        """The source's ``on_change``: a set that cannot be applied is logged and changes nothing."""
        try:
            self.apply_endpoints(states)
        except (ConfigError, ValueError) as exc:
            logger.error("discovered endpoints not applied: %s", exc)

    def decisions(self) -> List[Any]:
        return list(self.controller.decisions()) if self.controller is not None else []

    def view(self) -> Any:
        """The controller's current view (``ControllerSnapshot``: mode, weights, estimates), None while no
        controller runs or before its first tick."""
        return self.controller.snapshot() if self.controller is not None else None

    def endpoint_reports(self) -> Tuple[EndpointReport, ...]:
        """Per endpoint, how this client's attempts went (``EndpointReport``)."""
        eps, vacant = self.router.fleet.endpoints, self.router.vacant()  # slots; a vacant one is not reported
        stats = [d.stats() for d in self.router.dispatchers().values()]
        counters = self.router.endpoint_counters()
        ejected = self.router.ejected()
        copies = self.engine.rescue.copies()
        out = []
        for i, e in enumerate(eps):
            if vacant[i]:
                continue
            busiest = max(stats, key=lambda s: s.successes[i], default=None)
            ewma_s = busiest.ewma_latency_s[i] if busiest is not None and busiest.successes[i] else math.nan
            ok, over_slo, failed = counters[i]
            out.append(EndpointReport(e.name, e.url or "", sum(s.picks[i] for s in stats), ok, failed, over_slo,
                                      sum(s.in_flight[i] for s in stats), ewma_s, not ejected[i],
                                      copies.get(e.name, 0)))
        return tuple(out)

    def stop(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            source.stop()
        self.engine.close()
        controller, self.controller = self.controller, None
        if controller is not None:
            controller.stop()
        if self.readiness is not None:
            self.readiness.stop()
