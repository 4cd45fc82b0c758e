"""The failover loop every drop-in client runs for infer: pick, send, record, and on a failure maybe pick again.

    arrive -> pick(exclude=tried) -> send(i, remaining_s)
        ok          record(i, latency, True), return the result
        REQUEST     record(i, latency, False), raise the server's error unchanged (never retried)
        otherwise   record(i, latency, False); retry on another endpoint while the policy has retries left,
                    the deadline has time left and the retry budget has a token; else one
                    InferenceServerException naming every endpoint tried and why

Every pick is matched by exactly one record, whatever ``send`` raised (cancellation included). The loop is written
twice, once blocking (``run``) and once as a coroutine (``run_async``); both share ``Attempts`` for the
bookkeeping so they cannot drift.

Closing: ``Engine.close()`` (the client's ``close()`` calls it) turns any attempt that fails from then on into one
InferenceServerException saying the client was closed, instead of whatever the torn-down transport raised (aiohttp's
"Session is closed", a cancelled gRPC call). A ``CancelledError`` that the transport raised while the awaiting task
itself was not cancelled is such a failure too; a real cancellation of the task is recorded and propagated.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Optional

from tritonclient.utils import InferenceServerException

from ._hedging import HedgeDelay, HedgedCall, Start, run_hedged_async
from .dispatch_core import NoEndpointAvailable
from .retry import Attempt, Outcome, RetryBudget, RetryPolicy
from .routing import REQUEST_CLASSES, Router

__all__ = ["Engine", "Attempts", "Classifier"]

Classifier = Callable[[BaseException], Outcome]


class Engine:
    """Failover over ``router`` with ``classify`` (protocol-specific) and the fleet's retry settings."""

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
        #: the hedge delay rule when the fleet enables hedging (``tritonmix._hedging``), else None
        self.hedge_delay: Optional[HedgeDelay] = (HedgeDelay(router.fleet, self.hedge, clock)
                                                  if self.hedge.enabled else None)
        #: hedges per hedgeable request over the last 10 s: at most max(2, max_share x requests)
        self.hedge_budget = RetryBudget(self.hedge.max_share, min_retries=2, window_s=10.0, clock=clock)
        self.closed = False

    def close(self) -> None:
        """From now on a failed attempt ends its request with "the client was closed" (see the module doc)."""
        self.closed = True

    def run(self, model: str, request_class: str, deadline_s: Optional[float],
            send: Callable[[int, Optional[float]], Any]) -> Any:
        """Send through the fleet with failover; ``send(i, remaining_s)`` does one attempt on endpoint i."""
        return self._loop(Attempts(self, model, request_class, deadline_s), send)

    def resume(self, model: str, request_class: str, send: Callable[[int, Optional[float]], Any],
               i: int = -1, t0: float = 0.0, exc: Optional[BaseException] = None) -> Any:
        """``run`` (no deadline) for a request whose arrival and first attempt the caller made itself (the sync
        clients' fast path, ``tritonmix.routing.Lane``): the attempt on endpoint ``i`` started at ``t0`` failed
        with ``exc``, and is recorded here; ``exc`` None: the caller's pick found no endpoint (nothing to record)."""
        att = Attempts(self, model, request_class, None, arrived=True)
        if exc is not None:
            att.failed(i, t0, exc)
        return self._loop(att, send)

    def _loop(self, att: "Attempts", send: Callable[[int, Optional[float]], Any]) -> Any:
        while True:
            remaining_s = att.remaining_s(self.clock())
            i = att.pick()
            t0 = self.clock()
            try:
                result = send(i, remaining_s)
            except BaseException as exc:
                att.failed(i, t0, exc)
                continue
            att.succeeded(i, t0)
            return result

    def run_hedged(self, model: str, request_class: str, deadline_s: Optional[float], start: Start) -> Any:
        """``run`` with hedging (``tritonmix._hedging``; the fleet must enable it): ``start(i, remaining_s, done)``
        starts one attempt and calls ``done(result, error)`` when it ends. Batch requests are not hedged."""
        return HedgedCall(self, Attempts(self, model, request_class, deadline_s), start).run()

    async def run_async(self, model: str, request_class: str, deadline_s: Optional[float],
                        send: Callable[[int, Optional[float]], Awaitable[Any]], hedged: bool = False) -> Any:
        """``run`` for coroutines; a cancellation records the attempt as failed and propagates. ``hedged``: an
        interactive request is hedged when the fleet enables hedging (``tritonmix._hedging``)."""
        att = Attempts(self, model, request_class, deadline_s)
        if hedged and self.hedge_delay is not None and request_class == "interactive":
            return await run_hedged_async(self, att, send)
        while True:
            remaining_s = att.remaining_s(self.clock())
            i = att.pick()
            t0 = self.clock()
            try:
                result = await send(i, remaining_s)
            except asyncio.CancelledError as exc:
                att.failed(i, t0, exc if _task_cancelled() else _transport_cancelled(exc))
                continue
            except BaseException as exc:
                att.failed(i, t0, exc)
                continue
            att.succeeded(i, t0)
            return result

    def closed_error(self, model: str) -> InferenceServerException:
        return InferenceServerException(
            msg=f"tritonmix: the client was closed while a request for model '{model}' was in flight")

    def exhausted(self, model: str, policy: RetryPolicy, why: str) -> InferenceServerException:
        tried = policy.describe() or "no endpoint was tried"
        return InferenceServerException(
            msg=f"tritonmix: model '{model}' failed on every endpoint tried ({why}): {tried}",
            status=self.unavailable_status,
        )


class Attempts:
    """The bookkeeping of one request: its dispatcher, deadline and retry policy (a new value per attempt)."""

    __slots__ = ("e", "model", "rc", "d", "deadline_at", "policy")

    def __init__(self, engine: Engine, model: str, request_class: str, deadline_s: Optional[float],
                 arrived: bool = False) -> None:
        if request_class not in REQUEST_CLASSES:
            raise InferenceServerException(
                msg=f"request_class must be one of {', '.join(REQUEST_CLASSES)}, got {request_class!r}")
        self.e = engine
        self.model = model
        self.rc = request_class
        now = engine.clock()
        if not arrived:
            engine.router.arrive((model, request_class), now)
        self.d = engine.router.dispatcher(model, request_class)
        self.deadline_at = None if deadline_s is None else now + deadline_s
        self.policy = engine.policy

    def noted(self, i: int, t0: float, exc: BaseException) -> float:
        """Record a failed attempt and add it to the history; returns the time. Raises what ends the request
        whatever else is in flight: a cancellation, the client closed, the server's error about the request."""
        now = self.e.clock()
        self.d.record(i, max(0.0, now - t0), False)
        if not isinstance(exc, Exception):
            raise exc  # cancellation, KeyboardInterrupt: recorded, propagated
        if self.e.closed:
            self.e.router.failed(i, Outcome.MAYBE_RAN, now)
            raise self.e.closed_error(self.model) from exc
        outcome = self.e.classify(exc)
        self.e.router.failed(i, outcome, now)
        if outcome is Outcome.REQUEST:
            if self.e.on_not_found is not None and _is_not_found(exc):
                self.e.on_not_found(self.model)
            raise exc
        name = self.e.router.endpoint_names()[i]
        self.policy = self.policy.after(Attempt(i, name, outcome, _reason(exc)))
        return now

    def remaining_s(self, now: float) -> Optional[float]:
        if self.deadline_at is None:
            return None
        left = self.deadline_at - now
        if left <= 0.0:
            raise self.e.exhausted(self.model, self.policy, "deadline passed")
        return left

    def pick(self) -> int:
        tried = self.policy.tried() if self.policy.history else None
        try:
            return self.d.pick(tried) if tried else self.d.pick()
        except NoEndpointAvailable:
            why = "no other endpoint available" if tried else "no endpoint available (all ejected or not ready)"
            raise self.e.exhausted(self.model, self.policy, why) from None

    def succeeded(self, i: int, t0: float) -> None:
        latency_s = self.e.clock() - t0
        self.d.record(i, latency_s, True)
        self.e.router.succeeded(i, latency_s, self.rc)

    def failed(self, i: int, t0: float, exc: BaseException) -> None:
        """Record the failure, then return to retry or raise (the server's error, or the summary)."""
        now = self.noted(i, t0, exc)
        if not self.policy.can_retry():
            why = f"{len(self.policy.history)} attempt(s), no retries left"
            raise self.e.exhausted(self.model, self.policy, why) from exc
        if self.deadline_at is not None and now >= self.deadline_at:
            raise self.e.exhausted(self.model, self.policy, "deadline passed") from exc
        # The budget bounds the *extra* load retries put on servers. An attempt that never reached a server
        # (connection refused) loaded none, so sending the request elsewhere adds nothing: it is not charged.
        # That keeps a client that just saw the whole fleet down from refusing retries while servers come back.
        if self.policy.history[-1].outcome.reached_server and not self.e.router.budget.try_acquire():
            raise self.e.exhausted(self.model, self.policy, "retry budget spent") from exc


class TransportCancelled(ConnectionAbortedError):
    """The transport cancelled an attempt (a gRPC call cancelled when its channel closed); the caller did not."""


def _task_cancelled() -> bool:
    """Whether the running task itself is being cancelled (Python 3.11+; before that, assume it is)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return task is None or cancelling is None or cancelling() > 0


def _transport_cancelled(exc: BaseException) -> TransportCancelled:
    error = TransportCancelled("the attempt was cancelled by its transport (its channel or session closed)")
    error.__cause__ = exc
    return error


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InferenceServerException):
        status = exc.status()
        return f"[{status}] {exc.message()}" if status else str(exc.message())
    text = str(exc) or "no detail"
    return f"{type(exc).__name__}: {text}"


def _is_not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "unknown model" in text or "not found" in text or "not ready" in text
