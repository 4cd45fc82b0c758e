"""The callback driver of failover (gRPC's callback form of ``async_infer``): each attempt is an endpoint's own
``async_infer``; its callback either delivers the answer to the user's callback or starts the next attempt (from
gRPC's callback thread). The user's callback runs exactly once, with ``result=`` or ``error=``, as tritonclient
calls it.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional

from tritonclient.utils import InferenceServerException

from .attempts import Attempts
from .engine import Engine

__all__ = ["FailoverCall"]

logger = logging.getLogger(__name__)

Start = Callable[[int, Optional[float], Callable[..., None]], Any]


class FailoverCall:
    """tritonclient's ``CallContext`` for a request that may move between endpoints: ``cancel()`` cancels the
    attempt in flight and stops any further one."""

    def __init__(self, engine: Engine, model: str, request_class: str, deadline_s: Optional[float],
                 start: Start, callback: Callable[..., None]) -> None:
        self._engine = engine
        self._model = model
        self._rc = request_class
        self._deadline_s = deadline_s
        self._start = start
        self._callback = callback
        self._att: Optional[Attempts] = None
        self._ctx: Any = None
        self._cancelled = False

    def begin(self) -> "FailoverCall":
        try:
            self._att = Attempts(self._engine, self._model, self._rc, self._deadline_s)
        except InferenceServerException as exc:
            self._deliver(None, exc)
            return self
        self._next()
        return self

    def cancel(self) -> bool:
        self._cancelled = True
        ctx = self._ctx
        return bool(ctx.cancel()) if ctx is not None else False

    def _next(self) -> None:
        att = self._att
        assert att is not None
        try:
            remaining_s = att.remaining_s(self._engine.clock())
            i = att.pick()
        except InferenceServerException as exc:
            self._deliver(None, exc)
            return
        t0 = self._engine.clock()
        limit_s, rescue_s = att.limit(i, t0, remaining_s)
        done = functools.partial(self._done, i, t0, rescue_s)
        try:
            self._ctx = self._start(i, limit_s, done)
        except Exception as exc:  # noqa: BLE001 - an attempt that failed to start is a failed attempt
            self._done(i, t0, rescue_s, error=exc)

    def _done(self, i: int, t0: float, rescue_s: float, result: Any = None, error: Any = None) -> None:
        att = self._att
        assert att is not None
        if error is None:
            att.succeeded(i, t0)
            self._deliver(result, None)
            return
        try:
            att.failed(i, t0, error, rescue_s)
        except BaseException as final:  # noqa: BLE001 - the request's last word goes to the callback
            self._deliver(None, final)
            return
        if self._cancelled:
            self._deliver(None, InferenceServerException(msg="Locally cancelled by application!",
                                                         status="StatusCode.CANCELLED"))
            return
        self._next()

    def _deliver(self, result: Any, error: Any) -> None:
        try:
            self._callback(result=result, error=error)
        except Exception:  # noqa: BLE001 - as gRPC would, do not let a user callback kill the callback thread
            logger.exception("async_infer callback raised")
