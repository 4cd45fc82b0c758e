"""A Triton server as a queue: ``concurrency`` slots, FIFO, service time with jitter; Triton-style counters."""
from __future__ import annotations

import collections
import dataclasses
import random
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from ..signals import TritonSample

__all__ = ["ServerModel", "SimServer", "SimSource"]


@dataclasses.dataclass(frozen=True)
class ServerModel:
    service_s: float
    concurrency: int = 1
    jitter: float = 0.05          # standard deviation as a share of service_s
    #: service time per model name where it differs from ``service_s`` (the models share the slots)
    per_model_s: Mapping[str, float] = dataclasses.field(default_factory=dict)


class SimServer:
    """Queue semantics: a request starts at once when a slot is free, else waits FIFO. ``alive`` False: every
    request fails at once (connection refused) and readiness is False. Counters mirror Triton's metrics."""

    def __init__(self, model: ServerModel, rng: random.Random) -> None:
        self.service_s = model.service_s
        self.per_model_s = dict(model.per_model_s)
        self.concurrency = model.concurrency
        self.jitter = model.jitter
        self.alive = True
        self.epoch = 0               # bumped by kill(): a request started in an older epoch died with the server
        self._rng = rng
        self.busy = 0
        self.queue: Deque[Tuple[float, object]] = collections.deque()
        self.success = 0
        self.queue_us = 0.0
        self.compute_us = 0.0
        self.by_model: Dict[str, List[float]] = {}   # model -> [success, queue_us, compute_us], as Triton's series

    def kill(self) -> List[object]:
        """Die: returns the tokens of the queued requests (lost); running ones fail at their completion time."""
        self.alive = False
        self.epoch += 1
        lost = [token for _, token in self.queue]
        self.queue.clear()
        self.busy = 0
        return lost

    def revive(self) -> None:
        self.alive = True

    def submit(self, now: float, token: object) -> Optional[float]:
        """Accept a request; returns its completion time when it starts now, None when it queues."""
        if self.busy < self.concurrency:
            self.busy += 1
            return now + self._service(0.0, token)
        self.queue.append((now, token))
        return None

    def set_concurrency(self, now: float, slots: int) -> List[Tuple[object, float]]:
        """Serve at most ``slots`` requests at once from now on; returns (token, completion time) of the queued
        requests that start on slots a raise freed."""
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"set_concurrency: slots {slots!r} must be an integer >= 1")
        self.concurrency = slots
        started = []
        while (next_one := self._start_queued(now)) is not None:
            started.append(next_one)
        return started

    def finish(self, now: float) -> Optional[Tuple[object, float]]:
        """A request finished: free its slot; returns (token, completion time) of the next one started, if any."""
        self.busy -= 1
        return self._start_queued(now)

    def _start_queued(self, now: float) -> Optional[Tuple[object, float]]:
        """The oldest queued request on a free slot, if both exist (a lowered concurrency: the queue waits)."""
        if not self.queue or self.busy >= self.concurrency:
            return None
        arrived, token = self.queue.popleft()
        self.busy += 1
        return token, now + self._service(now - arrived, token)

    def _service(self, waited_s: float, token: object) -> float:
        key = getattr(token, "key", None)
        model = key[0] if isinstance(key, tuple) else None
        mean_s = self.per_model_s.get(model, self.service_s) if model is not None else self.service_s
        s = max(0.05 * mean_s, self._rng.gauss(mean_s, self.jitter * mean_s))
        self.success += 1  # counted at start: a finished one will be counted by its end; close enough per tick
        self.queue_us += waited_s * 1e6
        self.compute_us += s * 1e6
        if model is not None:
            own = self.by_model.setdefault(model, [0.0, 0.0, 0.0])
            own[0] += 1
            own[1] += waited_s * 1e6
            own[2] += s * 1e6
        return s

    def sample(self, now: float) -> TritonSample:
        """Sums and, where requests named their model, per-model series (pending is the shared queue's)."""
        pending = float(len(self.queue))
        models = {m: TritonSample(at_s=now, ready=self.alive, success=v[0], failure=0.0, queue_us=v[1],
                                  compute_us=v[2], pending=pending) for m, v in self.by_model.items()}
        return TritonSample(at_s=now, ready=self.alive, success=float(self.success), failure=0.0,
                            queue_us=self.queue_us, compute_us=self.compute_us, pending=pending, models=models)


class SimSource:
    """The controller's SignalSource over simulated servers: a fresh scrape of every server at each poll."""

    def __init__(self, servers: Sequence[SimServer], clock: Callable[[], float]) -> None:
        self._servers = servers
        self._clock = clock

    def poll(self, now: float) -> List[Optional[TritonSample]]:
        return [s.sample(now) for s in self._servers]

    def close(self) -> None:
        pass
