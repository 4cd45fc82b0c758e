"""What the HTTP and gRPC sync drop-ins share: life cycle, read-outs, and the request path of ``infer``.

    infer(...)                                   each protocol's own, with tritonclient's signature
      first attempt, when the lane exists, with no deadline, no sequence and no hedging (the common case):
          t0 = lane.begin(); i = lane.pick(); result = <endpoint i's client>.infer(...); lane.succeeded(i, t0)
          an interactive attempt is bounded by endpoint i's rescue limit (``tritonmix.request.rescue``: gRPC's
          client_timeout, a gevent timer for HTTP), read from ``engine.rescue.table`` (no lock, no call)
      a failure of it (or a pick that found no endpoint): ``_resume``: Engine.resume records it and fails over
      anything else: ``_infer``
          a sequence: Sequences.run (sticky to the endpoint that holds its state)
          hedged (the fleet enables hedging): the protocol's _run_hedged
          otherwise (a deadline, or the model's first request): Engine.run

The first attempt is written in each protocol's ``infer`` (five statements over the compiled lane), so that a
request costs no Python frame, closure, per-request object or lock besides tritonclient's own call.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple

from tritonclient.utils import InferenceServerException

from ..dispatch_core import NoEndpointAvailable
from ..request.engine import Send
from .core import ClientCore, EndpointReport

__all__ = ["SyncClientMixin"]


class SyncClientMixin:
    """The class using it sets ``self._core`` (a ClientCore), ``self._lanes`` (the router's lane table, or {} when
    hedged: every request then takes the engine) and ``self._closed``, defines ``close()``, ``_sender(args)`` (one
    attempt of ``infer(*args)`` on endpoint i as a ``Send``, bounded by the deadline) and
    ``_run_hedged(args, request_class, deadline_s)``; it must come before tritonclient's base."""

    _core: ClientCore
    _lanes: dict
    _closed: bool

    def __enter__(self) -> Any:
        return self

    def __exit__(self, type: Any, value: Any, traceback: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def close(self) -> None:
        raise NotImplementedError

    @property
    def router(self) -> Any:
        """The Router (dispatchers, lanes, masks, counters) of this client."""
        return self._core.router

    @property
    def controller(self) -> Any:
        """This client's Controller (``tritonmix.controller``), None when the fleet turns it off."""
        return self._core.controller

    @property
    def pinned_sequences(self) -> int:
        """Sequences this client holds pinned to an endpoint (started and not yet ended)."""
        return len(self._core.pins)

    def decisions(self) -> List[Any]:
        """The controller's decision log (empty while no controller runs)."""
        return self._core.decisions()

    def controller_view(self) -> Any:
        """The controller's current view (mode, weights, capacity estimates: a ``ControllerSnapshot``), None while
        no controller runs or before its first tick."""
        return self._core.view()

    def endpoint_reports(self) -> Tuple[EndpointReport, ...]:
        """Per endpoint: how many attempts this client sent there and how they went."""
        return self._core.endpoint_reports()

    def apply_endpoints(self, states: Any) -> Any:
        """Follow a whole discovered set of endpoints (``EndpointState``s or ready ``EndpointSpec``s, by name:
        joins, drains, leaves; ``tritonmix.clients.churn``); returns the router's ``EndpointChange``. A fleet that
        names a discovery source applies its sets by itself."""
        return self._core.apply_endpoints(states)

    # ---- protocol hooks -----------------------------------------------------------------------------------------

    def _sender(self, args: tuple) -> Send:
        raise NotImplementedError

    def _run_hedged(self, args: tuple, request_class: str, deadline_s: Optional[float]) -> Any:
        raise NotImplementedError

    # ---- the request path (module docstring) ------------------------------------------------------------------

    def _resume(self, args: tuple, request_class: str, i: int, t0: float, exc: BaseException,
                rescue_s: float = math.inf) -> Any:
        """After the first attempt of ``infer(*args)`` on endpoint ``i`` (begun at ``t0``, under the rescue limit
        ``rescue_s``) raised ``exc``, or its pick did (``i`` < 0): failover from there. Anything but
        NoEndpointAvailable from the pick is raised."""
        if i < 0 and not isinstance(exc, NoEndpointAvailable):
            raise exc
        return self._core.engine.resume(args[0], request_class, self._sender(args), i, t0, exc if i >= 0 else None,
                                        rescue_s)

    def _infer(self, args: tuple, request_class: str, deadline_s: Optional[float], sequence_id: Any = 0,
               sequence_start: bool = False, sequence_end: bool = False) -> Any:
        """``infer(*args)`` other than by the first-attempt path (module docstring)."""
        engine = self._core.engine
        if self._closed:
            raise InferenceServerException(msg="tritonmix: the client is closed")
        if sequence_id:  # 0 and "" mean no sequence, as in Triton
            return self._core.sequences.run(args[0], request_class, deadline_s, self._sender(args), sequence_id,
                                            sequence_start, sequence_end)
        if engine.hedged:
            return self._run_hedged(args, request_class, deadline_s)
        return engine.run(args[0], request_class, deadline_s, self._sender(args))
