"""The failover drivers: pick, send, record, and on a failure maybe pick again; one blocking (``run``), one for
coroutines (``run_async``), both over ``Attempts`` so that their bookkeeping cannot drift. Hedged requests take the
hedging drivers instead (``tritonmix.request.hedging``), gRPC's callback form ``callback.FailoverCall``.

    begin -> pick(exclude=tried) -> send(i, limit_s)   limit_s: the deadline's remaining time or, for interactive
                                                        requests, i's rescue limit when shorter (``rescue``)
        ok          lane.succeeded(i, t0), return the result
        REQUEST     lane.failed(i, t0, REQUEST), raise the server's error unchanged (never retried)
        otherwise   lane.failed(i, t0, outcome); retry on another endpoint while the policy has retries left,
                    the deadline has time left and the retry budget has a token; else one
                    InferenceServerException naming every endpoint tried and why, and the state of the others
        no answer within the rescue limit: STALLED, sent once more elsewhere (the rescue copy, ``rescue``)

Every pick is matched by exactly one record, whatever ``send`` raised (cancellation included).

Closing: ``Engine.close()`` (the client's ``close()`` calls it) turns any attempt that fails from then on into one
InferenceServerException saying the client was closed, instead of whatever the torn-down transport raised (aiohttp's
"Session is closed", a cancelled gRPC call). A ``CancelledError`` that the transport raised while the awaiting task
itself was not cancelled is such a failure too; a real cancellation of the task is recorded and propagated.
"""
from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Awaitable, Callable, Optional

from tritonclient.utils import InferenceServerException

from .attempts import Attempts, task_cancelled, transport_cancelled
from .hedging import HedgeDelay, HedgedCall, Start, run_hedged_async
from .rescue import Rescue
from .retry import Outcome, RetryBudget, RetryPolicy
from .router import Router

__all__ = ["Engine", "Classifier", "Send", "AsyncSend"]

Classifier = Callable[[BaseException], Outcome]
#: send(i, remaining_s) does one attempt on endpoint i (remaining_s: None without a deadline)
Send = Callable[[int, Optional[float]], Any]
AsyncSend = Callable[[int, Optional[float]], Awaitable[Any]]


class Engine:
    """Failover over ``router`` with ``classify`` (protocol-specific) and the fleet's retry and hedge settings."""

    def __init__(self, router: Router, classify: Classifier, *, unavailable_status: str,
                 clock: Callable[[], float] = time.monotonic,
                 on_not_found: Optional[Callable[[str], None]] = None) -> None:
        self.router = router
        self.classify = classify
        self.unavailable_status = unavailable_status
        self.clock = clock
        self.on_not_found = on_not_found
        self.policy = RetryPolicy(max_retries=router.fleet.controller.max_retries)
        self.hedge = router.fleet.controller.hedge
        #: the hedge delay rule when the fleet enables hedging (``tritonmix.request.hedging``), else None
        self.hedge_delay: Optional[HedgeDelay] = (HedgeDelay(router.fleet, self.hedge, clock)
                                                  if self.hedge.enabled else None)
        #: hedges per hedgeable request over the last 10 s: at most max(2, max_share x requests)
        self.hedge_budget = RetryBudget(self.hedge.max_share, min_retries=2, window_s=10.0, clock=clock)
        settings = router.fleet.controller
        #: the rescue limits of interactive attempts and the copies sent (``tritonmix.request.rescue``)
        self.rescue = Rescue(router.lane, router.endpoint_names, router.fleet.slo_s, settings.rescue_factor,
                             settings.rescue)
        self.closed = False

    @property
    def hedged(self) -> bool:
        """Whether the fleet enables hedging (interactive requests then take the hedging drivers)."""
        return self.hedge_delay is not None

    def close(self) -> None:
        """From now on a failed attempt ends its request with "the client was closed" (see the module doc)."""
        self.closed = True

    def run(self, model: str, request_class: str, deadline_s: Optional[float], send: Send) -> Any:
        """Send through the fleet with failover; ``send(i, remaining_s)`` does one attempt on endpoint i."""
        return self.drive(Attempts(self, model, request_class, deadline_s), send)

    def resume(self, model: str, request_class: str, send: Send, i: int = -1, t0: float = 0.0,
               exc: Optional[BaseException] = None, rescue_s: float = math.inf) -> Any:
        """``run`` (no deadline) for a request whose ``lane.begin()`` and first attempt the caller made itself (the
        sync clients' first attempt, ``tritonmix.clients.sync``): the attempt on endpoint ``i`` started at ``t0``
        under the rescue limit ``rescue_s`` failed with ``exc``, and is recorded here; ``exc`` None: the caller's
        pick found no endpoint."""
        att = Attempts(self, model, request_class, None, begun=True)
        if exc is not None:
            att.failed(i, t0, exc, rescue_s)
        return self.drive(att, send)

    def drive(self, att: Attempts, send: Send) -> Any:
        """The blocking failover loop over ``att``."""
        while True:
            remaining_s = att.remaining_s(self.clock())
            i = att.pick()
            t0 = self.clock()
            limit_s, rescue_s = att.limit(i, t0, remaining_s)
            try:
                result = send(i, limit_s)
            except BaseException as exc:
                att.failed(i, t0, exc, rescue_s)
                continue
            att.succeeded(i, t0)
            return result

    def run_hedged(self, model: str, request_class: str, deadline_s: Optional[float], start: Start) -> Any:
        """``run`` with hedging (the fleet must enable it): ``start(i, remaining_s, done)`` starts one attempt and
        calls ``done(result, error)`` when it ends. Batch requests are not hedged."""
        return HedgedCall(self, Attempts(self, model, request_class, deadline_s), start).run()

    async def run_async(self, model: str, request_class: str, deadline_s: Optional[float], send: AsyncSend,
                        hedged: bool = False) -> Any:
        """``run`` for coroutines; a cancellation records the attempt as failed and propagates. ``hedged``: an
        interactive request is hedged when the fleet enables hedging."""
        att = Attempts(self, model, request_class, deadline_s)
        if hedged and self.hedged and request_class == "interactive":
            return await run_hedged_async(self, att, send)
        return await self.drive_async(att, send)

    async def drive_async(self, att: Attempts, send: AsyncSend) -> Any:
        """The failover loop over ``att`` for coroutines."""
        while True:
            remaining_s = att.remaining_s(self.clock())
            i = att.pick()
            t0 = self.clock()
            limit_s, rescue_s = att.limit(i, t0, remaining_s)
            try:
                result = await send(i, limit_s)
            except asyncio.CancelledError as exc:
                att.failed(i, t0, exc if task_cancelled() else transport_cancelled(exc), rescue_s)
                continue
            except BaseException as exc:
                att.failed(i, t0, exc, rescue_s)
                continue
            att.succeeded(i, t0)
            return result

    def closed_error(self, model: str) -> InferenceServerException:
        return InferenceServerException(
            msg=f"tritonmix: the client was closed while a request for model '{model}' was in flight")

    def exhausted(self, model: str, policy: RetryPolicy, why: str) -> InferenceServerException:
        """The summary error: each endpoint tried and what happened, then the state of those not tried."""
        tried = policy.describe() or "no endpoint was tried"
        others = self._others(model, policy)
        return InferenceServerException(
            msg=f"tritonmix: model '{model}' failed on every endpoint tried ({why}): {tried}{others}",
            status=self.unavailable_status,
        )

    def _others(self, model: str, policy: RetryPolicy) -> str:
        """"; not tried: name (state), ..." for the endpoints the request did not try."""
        router, tried = self.router, policy.tried()
        ejected, vacant = router.ejected(), router.vacant()
        rest = []
        for j, name in enumerate(router.endpoint_names()):
            if j not in tried and not vacant[j]:
                state = "ejected" if ejected[j] else "not ready" if not router.is_available(model, j) else "available"
                rest.append(f"{name} ({state})")
        return f"; not tried: {', '.join(rest)}" if rest else ""
