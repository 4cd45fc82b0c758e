"""The bookkeeping of one request, shared by every driver (``engine``, ``hedging``, ``callback``, ``sequences``):
its lane, deadline and retry policy, and the errors that end it.

    Attempts(engine, model, rc, deadline_s)   lane.begin() (unless the caller began it), the deadline from now
    pick()                                    lane.pick(exclude=endpoints tried); none left on a retry: a last
                                              resort (``Router.last_resort``: an endpoint not tried that is up
                                              but ejected, masked or weighted 0, counted in with
                                              ``Dispatcher.take``); none at all: the summary error
    limit(i, now, remaining_s)                (the time limit to give the transport, the rescue limit or inf): the
                                              shorter of the deadline's remaining_s and endpoint i's rescue limit
                                              (``tritonmix.request.rescue``; interactive requests only)
    succeeded(i, t0)                          lane.succeeded
    noted(i, t0, exc, rescue_s)               lane.failed with the classified outcome (STALLED when it failed at its
                                              rescue limit ``rescue_s``); raises what ends the request whatever else
                                              is in flight (a cancellation, the client closed, the server's answer
                                              about the request); else the attempt joins the history
    failed(i, t0, exc, rescue_s)              noted, then raises unless a retry is allowed (policy, deadline, budget);
                                              a retry after a stall is a rescue copy, counted (the first of a
                                              request free of the retry budget, a further one charged to it)

Every pick is matched by exactly one lane.succeeded or lane.failed. What the user sees is tritonclient's
InferenceServerException: the server's own, or one naming every endpoint tried and why. An attempt that the
transport cancelled while the awaiting task was not cancelled is ``tritonmix.errors.TransportCancelled``: a failed
attempt, not a cancellation.
"""
from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Optional, Tuple

from tritonclient.utils import InferenceServerException

from ..dispatch_core import NoEndpointAvailable
from ..errors import AttemptStalled, TransportCancelled
from .rescue import STALL_TOLERANCE
from .retry import Attempt, Outcome
from .router import REQUEST_CLASSES

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

__all__ = ["Attempts", "task_cancelled", "transport_cancelled", "is_not_found"]


class Attempts:
    """The bookkeeping of one request (module docstring); ``policy`` is a new value after each failed attempt."""

    __slots__ = ("engine", "model", "request_class", "lane", "deadline_at", "policy", "rescue")

    def __init__(self, engine: "Engine", model: str, request_class: str, deadline_s: Optional[float],
                 begun: bool = False) -> None:
        if request_class not in REQUEST_CLASSES:
            raise InferenceServerException(
                msg=f"request_class must be one of {', '.join(REQUEST_CLASSES)}, got {request_class!r}")
        self.engine = engine
        self.model = model
        self.request_class = request_class
        self.lane = engine.router.lane(model, request_class)
        now = engine.clock() if begun else self.lane.begin()
        self.deadline_at = None if deadline_s is None else now + deadline_s
        self.policy = engine.policy
        self.rescue = engine.rescue.limits(model, request_class)

    def limit(self, i: int, now: float, remaining_s: Optional[float]) -> Tuple[Optional[float], float]:
        """(the time limit to give the transport for an attempt on endpoint i, its rescue limit): the rescue limit
        when it is the shorter (it is then also the first value), else the deadline's ``remaining_s`` and inf."""
        rescue = self.rescue
        if rescue is None or (remaining_s is not None and self.policy.history and self.policy.stalls()):
            return remaining_s, math.inf  # a copy under a deadline has the deadline's time (``rescue``)
        limit_s = rescue.limit_s(i, now)
        if remaining_s is not None and remaining_s <= limit_s:
            return remaining_s, math.inf
        return limit_s, limit_s

    def noted(self, i: int, t0: float, exc: BaseException, rescue_s: float = math.inf) -> float:
        """Record a failed attempt and add it to the history; returns the time. Raises what ends the request
        whatever else is in flight: a cancellation, the client closed, the server's error about the request. An
        attempt that failed at its rescue limit ``rescue_s`` is STALLED (``tritonmix.request.rescue``)."""
        engine = self.engine
        if not isinstance(exc, Exception):
            self.lane.failed(i, t0, None)
            raise exc  # cancellation, KeyboardInterrupt: recorded, propagated
        if engine.closed:
            self.lane.failed(i, t0, Outcome.MAYBE_RAN)
            raise engine.closed_error(self.model) from exc
        if rescue_s < math.inf and self.rescue is not None and not isinstance(exc, AttemptStalled) \
                and engine.clock() - t0 >= STALL_TOLERANCE * rescue_s:
            exc = engine.rescue.stalled(self.rescue, i, rescue_s, exc)
        outcome = Outcome.STALLED if isinstance(exc, AttemptStalled) else engine.classify(exc)
        now = self.lane.failed(i, t0, outcome)
        if outcome is Outcome.REQUEST:
            if engine.on_not_found is not None and is_not_found(exc):
                engine.on_not_found(self.model)
            raise exc
        name = engine.router.endpoint_names()[i]
        self.policy = self.policy.after(Attempt(i, name, outcome, _reason(exc)))
        return now

    def remaining_s(self, now: float) -> Optional[float]:
        if self.deadline_at is None:
            return None
        left = self.deadline_at - now
        if left <= 0.0:
            raise self.engine.exhausted(self.model, self.policy, "deadline passed")
        return left

    def pick(self) -> int:
        tried = self.policy.tried() if self.policy.history else None
        try:
            return self.lane.pick(tried)
        except NoEndpointAvailable:
            if tried:
                i = self.engine.router.last_resort(self.model, tried)
                if i is not None:
                    try:
                        return self.lane.dispatcher.take(i)
                    except NoEndpointAvailable:  # it left the set in between
                        pass
            why = "no other endpoint available" if tried else "no endpoint available (all ejected or not ready)"
            raise self.engine.exhausted(self.model, self.policy, why) from None

    def succeeded(self, i: int, t0: float) -> None:
        self.lane.succeeded(i, t0)

    def failed(self, i: int, t0: float, exc: BaseException, rescue_s: float = math.inf) -> None:
        """Record the failure, then return to retry or raise (the server's error, or the summary)."""
        now = self.noted(i, t0, exc, rescue_s)
        engine, policy = self.engine, self.policy
        last = policy.history[-1].outcome
        copies = policy.stalls() - 1 if last is Outcome.STALLED else 0  # rescue copies that stalled before this one
        if not policy.can_retry():
            why = (f"the rescue cop{'y' if copies == 1 else 'ies'} got no answer either" if copies
                   else f"{len(policy.history)} attempt(s), no retries left")
            raise engine.exhausted(self.model, policy, why) from exc
        if self.deadline_at is not None and now >= self.deadline_at:
            raise engine.exhausted(self.model, policy, "deadline passed") from exc
        # The budget bounds the *extra* load retries put on servers. An attempt that never reached a server
        # (connection refused) loaded none, so sending the request elsewhere adds nothing: it is not charged.
        # That keeps a client that just saw the whole fleet down from refusing retries while servers come back.
        # A request's first rescue copy is not charged either: it replaces the attempt given up, and refusing it
        # would fail a request that was only waiting (``rescue``). A further copy (the first stalled too: a
        # machine-wide hiccup, or a fleet freezing) is a retry like any other, so a frozen fleet cannot turn every
        # request into max_retries + 1 attempts.
        if last is Outcome.STALLED:
            if copies and not engine.router.budget.try_acquire():
                raise engine.exhausted(self.model, policy, "the rescue copy got no answer either, and the retry "
                                                           "budget is spent") from exc
            engine.rescue.count_copy(i)
        elif last.reached_server and not engine.router.budget.try_acquire():
            raise engine.exhausted(self.model, policy, "retry budget spent") from exc


def task_cancelled() -> bool:
    """Whether the running task itself is being cancelled (Python 3.11+; before that, assume it is)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return task is None or cancelling is None or cancelling() > 0


def transport_cancelled(exc: BaseException) -> TransportCancelled:
    error = TransportCancelled("the attempt was cancelled by its transport (its channel or session closed)")
    error.__cause__ = exc
    return error


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InferenceServerException):
        status = exc.status()
        return f"[{status}] {exc.message()}" if status else str(exc.message())
    text = str(exc) or "no detail"
    return f"{type(exc).__name__}: {text}"


def is_not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "unknown model" in text or "not found" in text or "not ready" in text
