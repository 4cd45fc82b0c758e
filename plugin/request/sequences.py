"""Sequences (stateful models: ``sequence_id`` not 0 or ""): Triton keeps a sequence's state on the server that
started it, so every request of a sequence goes to one endpoint. ``Sequences`` wraps the failover drivers::

    sequence_start, or a sequence not seen   any endpoint, with failover; pinned to the one that answered
    a later request of a pinned sequence      only its endpoint (picked through its lane, so it is counted and
                                              recorded as any request): no failover, the state is not elsewhere; an
                                              endpoint that takes no requests now (ejected, not ready, weight 0)
                                              fails the request at once with an error that says to start the
                                              sequence again; no answer within the endpoint's rescue limit
                                              (interactive, ``tritonmix.request.rescue``) fails the request with an
                                              error naming the endpoint that holds the state, never a move
    sequence_end                              unpinned after the request, whatever its outcome

The pins (``SequencePins``) are bounded: past ``capacity`` the least recently used goes (a sequence that never sent
its end). Sequences are never hedged.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any, FrozenSet, List, Optional, Tuple

from tritonclient.utils import InferenceServerException

from ..dispatch_core import NoEndpointAvailable
from .attempts import Attempts
from .engine import AsyncSend, Engine, Send
from .retry import Outcome, RetryPolicy

__all__ = ["SequencePins", "Sequences"]

Key = Tuple[str, Any]


class SequencePins:
    """Which endpoint each live sequence ``(model, sequence_id)`` is on. Thread-safe; bounded (module docstring)."""

    def __init__(self, n_endpoints: int, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._pins: "OrderedDict[Key, int]" = OrderedDict()
        self._lock = threading.Lock()
        self._n = n_endpoints
        self._others: dict = {}  # i -> every endpoint but i, made on first use (O(n) each)

    def follow_router(self, router: Any) -> None:
        """Follow the router's slots (``tritonmix.request.slots``): ``others`` covers the slots that joined, and a
        sequence pinned to a slot that another endpoint took is forgotten (its state went with the endpoint that
        left; while the slot was vacant its requests failed with "start the sequence again")."""
        router.add_endpoints_listener(self._follow)

    def _follow(self, change: Any) -> None:
        with self._lock:
            if change.n_slots != self._n:
                self._n, self._others = change.n_slots, {}
            reused = set(change.joined)
            for key in [k for k, i in self._pins.items() if i in reused]:
                del self._pins[key]

    def get(self, key: Key) -> Optional[int]:
        with self._lock:
            i = self._pins.get(key)
            if i is not None:
                self._pins.move_to_end(key)
            return i

    def pin(self, key: Key, i: int) -> None:
        with self._lock:
            self._pins[key] = i
            self._pins.move_to_end(key)
            while len(self._pins) > self.capacity:
                self._pins.popitem(last=False)

    def unpin(self, key: Key) -> None:
        with self._lock:
            self._pins.pop(key, None)

    def others(self, i: int) -> FrozenSet[int]:
        """Every endpoint but i: what a pinned request's pick excludes."""
        others = self._others.get(i)
        if others is None:
            others = self._others[i] = frozenset(range(self._n)) - {i}
        return others

    def __len__(self) -> int:
        return len(self._pins)


class _Pinned(Attempts):
    """A request of a pinned sequence: only endpoint ``i``, no retries; when i takes no requests now the sequence
    is unpinned and the request fails at once (nothing was picked)."""

    __slots__ = ("i", "key", "pins")

    def __init__(self, engine: Engine, model: str, request_class: str, deadline_s: Optional[float], key: Key,
                 i: int, pins: SequencePins) -> None:
        super().__init__(engine, model, request_class, deadline_s)
        self.policy = RetryPolicy(max_retries=0, retry_maybe_executed=engine.policy.retry_maybe_executed)
        self.i, self.key, self.pins = i, key, pins

    def pick(self) -> int:
        others = self.pins.others(self.i)
        try:
            return self.lane.pick(others or None)
        except NoEndpointAvailable:
            self.pins.unpin(self.key)
            name = self.engine.router.endpoint_names()[self.i]
            raise InferenceServerException(
                msg=f"tritonmix: sequence {self.key[1]!r} of model '{self.model}' is on endpoint {name}, which takes "
                    f"no requests now (ejected, not ready or weight 0); its state is there: start the sequence again",
                status=self.engine.unavailable_status) from None

    def failed(self, i: int, t0: float, exc: BaseException, rescue_s: float = math.inf) -> None:
        """As ``Attempts.failed`` (no retries: it raises), with an error that names the sequence's endpoint when
        the attempt stalled."""
        before = len(self.policy.history)
        try:
            super().failed(i, t0, exc, rescue_s)
        except InferenceServerException as error:
            history = self.policy.history
            if len(history) > before and history[-1].outcome is Outcome.STALLED:
                raise InferenceServerException(
                    msg=f"tritonmix: sequence {self.key[1]!r} of model '{self.model}' is on endpoint "
                        f"{history[-1].name}, which gave {history[-1].reason}; the request was not moved, since the "
                        f"sequence's state is there",
                    status=self.engine.unavailable_status) from error
            raise


class Sequences:
    """The sequence rules (module docstring) around ``Engine.drive`` / ``drive_async``."""

    def __init__(self, engine: Engine, pins: SequencePins) -> None:
        self.engine = engine
        self.pins = pins

    def run(self, model: str, request_class: str, deadline_s: Optional[float], send: Send, sequence_id: Any,
            start: bool, end: bool) -> Any:
        key = (model, sequence_id)
        att, served = self._attempts(model, request_class, deadline_s, key, start)

        def tracked(j: int, remaining_s: Optional[float]) -> Any:
            result = send(j, remaining_s)
            served.append(j)
            return result

        try:
            result = self.engine.drive(att, tracked)
        except BaseException:
            self._ended(key, start or end)
            raise
        self._ended(key, end, served[-1])
        return result

    async def run_async(self, model: str, request_class: str, deadline_s: Optional[float], send: AsyncSend,
                        sequence_id: Any, start: bool, end: bool) -> Any:
        key = (model, sequence_id)
        att, served = self._attempts(model, request_class, deadline_s, key, start)

        async def tracked(j: int, remaining_s: Optional[float]) -> Any:
            result = await send(j, remaining_s)
            served.append(j)
            return result

        try:
            result = await self.engine.drive_async(att, tracked)
        except BaseException:
            self._ended(key, start or end)
            raise
        self._ended(key, end, served[-1])
        return result

    def _attempts(self, model: str, request_class: str, deadline_s: Optional[float], key: Key,
                  start: bool) -> Tuple[Attempts, List[int]]:
        i = None if start else self.pins.get(key)
        if i is None:
            return Attempts(self.engine, model, request_class, deadline_s), []
        return _Pinned(self.engine, model, request_class, deadline_s, key, i, self.pins), []

    def _ended(self, key: Key, unpin: bool, served: Optional[int] = None) -> None:
        """After a request: unpin, or pin to the endpoint that served it."""
        if unpin:
            self.pins.unpin(key)
        elif served is not None:
            self.pins.pin(key, served)
