"""What the four drop-in clients share: the fleet from ``url=``/``fleet=``, the router, the controller hook, the
background readiness refresher and sticky routing of sequences.

Model readiness is an availability mask (``Router.set_model_ready``). It is probed, never on the hot path:
once synchronously when a model's first dispatcher is created, then by one background thread every
``readiness_interval_s`` for every model seen, and sooner (rate-limited to once per ``min_refresh_s``) after an
endpoint answered "unknown model / not ready". A probe that cannot reach an endpoint leaves it as unknown (health
is the ejection mask's business, not readiness's).

Sequences (stateful models: ``sequence_id`` not 0 or ""): Triton keeps a sequence's state on the server that started
it, so every request of a sequence goes to one endpoint (``SequencePins``)::

    sequence_start, or a sequence this client has not seen   any endpoint, with failover; pinned to the one that answered
    a later request of a pinned sequence                      only its endpoint (picked through its dispatcher, so it
                                                              is counted and recorded as any request): no failover, the
                                                              state is not elsewhere; an endpoint that takes no requests
                                                              now (ejected, not ready, weight 0) fails the request at
                                                              once with an error that says to start the sequence again
    sequence_end                                              unpinned after the request, whatever its outcome
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from tritonclient.utils import InferenceServerException

from ._failover import Attempts, Engine
from .controller import start_controller
from .dispatch_core import NoEndpointAvailable
from .errors import ConfigError
from .fleet import Fleet
from .retry import RetryPolicy
from .routing import Router

__all__ = ["resolve_fleet", "ClientCore", "ReadinessRefresher", "SequencePins"]

logger = logging.getLogger(__name__)

Probe = Callable[[int, str], Optional[bool]]


def resolve_fleet(url: Optional[str], fleet: Optional[Fleet], protocol: str) -> Fleet:
    """``fleet=`` as given, else ``url=``: a fleet file path, or one ``host:port`` or a comma-separated list."""
    if fleet is None:
        if not url:
            raise ConfigError("give url= (host:port, a comma-separated list, or a fleet file) or fleet=")
        is_file = url.endswith((".yaml", ".yml", ".json")) or os.path.isfile(url)
        fleet = Fleet.from_file(url) if is_file else Fleet.from_urls(url, protocol=protocol)
    missing = [e.name for e in fleet.endpoints if e.url is None]
    if missing:
        raise ConfigError(f"endpoints {', '.join(missing)} have no url (start them with tritonmix.local.LocalFleet)")
    wrong = [e.name for e in fleet.endpoints if e.protocol != protocol]
    if wrong:
        raise ConfigError(f"endpoints {', '.join(wrong)} are not {protocol} endpoints; a {protocol} client needs "
                          f"{protocol} URLs")
    return fleet


class ClientCore:
    """The router, the controller it runs under, and the readiness refresher of one client."""

    def __init__(self, fleet: Fleet, *, seed: Optional[int], clock: Callable[[], float],
                 probe: Optional[Probe], readiness_interval_s: float,
                 on_probe_thread_exit: Optional[Callable[[], None]] = None, probe_settings: Any = None) -> None:
        self.fleet = fleet
        self.router = Router(fleet, seed=seed, clock=clock)
        self.pins = SequencePins(len(fleet.endpoints))
        self.readiness = ReadinessRefresher(self.router, probe, interval_s=readiness_interval_s, clock=clock,
                                            on_thread_exit=on_probe_thread_exit)
        if probe is not None:  # the aio clients probe from their event loop instead
            self.router.add_listener(self.readiness.on_new_dispatcher)
        self.controller: Any = start_controller(fleet, self.router, probe_settings=probe_settings)

    def decisions(self) -> List[Any]:
        return list(self.controller.decisions()) if hasattr(self.controller, "decisions") else []

    def stop(self) -> None:
        controller, self.controller = self.controller, None
        if controller is not None and hasattr(controller, "stop"):
            controller.stop()
        self.readiness.stop()


class SequencePins:
    """Which endpoint each live sequence ``(model, sequence_id)`` is on (see the module docstring). Thread-safe;
    bounded: past ``capacity`` pins the least recently used goes (a sequence that never sent its end)."""

    def __init__(self, n_endpoints: int, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._pins: "OrderedDict[Tuple[str, Any], int]" = OrderedDict()
        self._lock = threading.Lock()
        self._others = [frozenset(range(n_endpoints)) - {i} for i in range(n_endpoints)]

    def get(self, key: Tuple[str, Any]) -> Optional[int]:
        with self._lock:
            i = self._pins.get(key)
            if i is not None:
                self._pins.move_to_end(key)
            return i

    def pin(self, key: Tuple[str, Any], i: int) -> None:
        with self._lock:
            self._pins[key] = i
            self._pins.move_to_end(key)
            while len(self._pins) > self.capacity:
                self._pins.popitem(last=False)

    def unpin(self, key: Tuple[str, Any]) -> None:
        with self._lock:
            self._pins.pop(key, None)

    def others(self, i: int) -> FrozenSet[int]:
        """Every endpoint but i: what a pinned request's pick excludes."""
        return self._others[i]

    def __len__(self) -> int:
        return len(self._pins)


def pinned_error(engine: Engine, model: str, sequence_id: Any, name: str) -> InferenceServerException:
    return InferenceServerException(
        msg=f"tritonmix: sequence {sequence_id!r} of model '{model}' is on endpoint {name}, which takes no requests "
            f"now (ejected, not ready or weight 0); its state is there: start the sequence again",
        status=engine.unavailable_status)


def pinned_attempts(engine: Engine, model: str, request_class: str, deadline_s: Optional[float]) -> Attempts:
    """The bookkeeping of a request of a pinned sequence: a failure ends it (no retries, no retry budget)."""
    att = Attempts(engine, model, request_class, deadline_s)
    att.policy = RetryPolicy(max_retries=0, retry_maybe_executed=engine.policy.retry_maybe_executed)
    return att


def pick_pinned(att: Attempts, pins: SequencePins, key: Tuple[str, Any], i: int) -> None:
    """Pick endpoint i through its dispatcher (counted and recorded as any pick). When it takes no requests now,
    the sequence is unpinned and the pinned error raised (nothing was picked)."""
    others = pins.others(i)
    try:
        att.d.pick(others) if others else att.d.pick()
    except NoEndpointAvailable:
        pins.unpin(key)
        raise pinned_error(att.e, att.model, key[1], att.e.router.endpoint_names()[i]) from None


class ReadinessRefresher:
    """Probes model readiness: synchronously for a new model, then in one background thread (see module doc)."""

    def __init__(self, router: Router, probe: Probe, *, interval_s: float = 5.0, min_refresh_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 on_thread_exit: Optional[Callable[[], None]] = None) -> None:
        self.router = router
        self.probe = probe
        self.interval_s = interval_s
        self.min_refresh_s = min_refresh_s
        self.clock = clock
        self.on_thread_exit = on_thread_exit
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._last: Dict[str, float] = {}
        self._thread: Optional[threading.Thread] = None

    def on_new_dispatcher(self, key: Any) -> None:
        model = key[0]
        with self._lock:
            if model in self._last:
                return
            self._last[model] = self.clock()
        self.refresh(model)
        self._ensure_thread()

    def refresh(self, model: str) -> None:
        ready = [self._probe_one(i, model) for i in range(len(self.router.fleet.endpoints))]
        self.router.set_model_ready(model, ready)

    def request_refresh(self, model: str) -> None:
        """After an "unknown model" answer: refresh soon, in the background (rate-limited)."""
        with self._lock:
            last = self._last.get(model, 0.0)
            if self.clock() - last < self.min_refresh_s:
                return
            self._last[model] = -1.0  # due now
        self._wake.set()

    def _probe_one(self, i: int, model: str) -> Optional[bool]:
        try:
            return self.probe(i, model)
        except Exception as exc:  # noqa: BLE001 - unreachable: unknown
            logger.debug("readiness probe of %s on endpoint %d failed: %s", model, i, exc)
            return None

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._loop, name="tritonmix-readiness", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(self.interval_s / 4)
                self._wake.clear()
                if self._stop.is_set():
                    break
                for model in self._due(self.clock()):
                    self.refresh(model)
        finally:
            if self.on_thread_exit is not None:
                self.on_thread_exit()

    def _due(self, now: float) -> Sequence[str]:
        with self._lock:
            due = [m for m, t in self._last.items() if t < 0 or now - t >= self.interval_s]
            for m in due:
                self._last[m] = now
        return due

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)


class SyncClientMixin:
    """What the HTTP and gRPC sync drop-ins share: context manager, close on collection, router and decisions.

    The class using it sets ``self._core`` (a ClientCore), ``self._router`` and ``self._closed`` and defines
    ``close()``; it must come before tritonclient's base in the bases.
    """

    _core: "ClientCore"
    _router: Any
    _closed: bool

    def __enter__(self) -> Any:
        return self

    def __exit__(self, type: Any, value: Any, traceback: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    @property
    def router(self) -> Any:
        """The Router (dispatchers, masks, counters) of this client."""
        return self._router

    def decisions(self) -> List[Any]:
        """The controller's decision log (empty while no controller runs)."""
        return self._core.decisions()

    def _sender(self, args: tuple) -> Callable[[int, Optional[float]], Any]:
        """``send(i, remaining_s)``: one attempt of ``infer(*args)`` on endpoint i (defined by each protocol)."""
        raise NotImplementedError

    def _infer_sequence(self, args: tuple, sequence_id: Any, start: bool, end: bool, request_class: str,
                        deadline_s: Optional[float]) -> Any:
        """infer for a request of a sequence: sticky to the endpoint that holds its state (module docstring)."""
        if self._closed:
            raise InferenceServerException(msg="tritonmix: the client is closed")
        model = args[0]
        key = (model, sequence_id)
        pins = self._core.pins
        send = self._sender(args)
        i = None if start else pins.get(key)
        try:
            if i is None:
                served: List[int] = []

                def tracked(j: int, remaining_s: Optional[float]) -> Any:
                    result = send(j, remaining_s)
                    served.append(j)
                    return result

                result = self._engine.run(model, request_class, deadline_s, tracked)
                i = served[-1]
            else:
                result = self._send_pinned(model, request_class, deadline_s, key, i, send)
        except BaseException:
            if start or end:
                pins.unpin(key)
            raise
        if end:
            pins.unpin(key)
        else:
            pins.pin(key, i)
        return result

    def _send_pinned(self, model: str, request_class: str, deadline_s: Optional[float], key: Tuple[str, Any],
                     i: int, send: Callable[[int, Optional[float]], Any]) -> Any:
        engine = self._engine
        att = pinned_attempts(engine, model, request_class, deadline_s)
        remaining_s = att.remaining_s(engine.clock())
        pick_pinned(att, self._core.pins, key, i)
        t0 = engine.clock()
        try:
            result = send(i, remaining_s)
        except BaseException as exc:
            att.failed(i, t0, exc)  # records, then raises: the server's error, or one naming the endpoint
            raise  # not reached: no retries are left
        att.succeeded(i, t0)
        return result
