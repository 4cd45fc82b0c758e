"""Retry policy of the drop-in clients: which failures fail over, how often, and how much extra load retries may add.

Two pieces, after urllib3's ``util/retry.py`` and Envoy's retry budget:

- ``RetryPolicy``: an immutable value. Each failed attempt makes a new policy with one more ``Attempt`` in its
  ``history`` (``policy = policy.after(attempt)``); ``can_retry()`` and ``tried()`` read that history. An attempt
  says whether the request *never reached the server* (connection refused, DNS, connect timeout: safe to send
  anywhere) or *the server may have run it* (reset or timeout after the request was sent, 503 / UNAVAILABLE).
  Inference is idempotent, so both fail over by default; ``retry_maybe_executed=False`` keeps only the first kind.
- ``RetryBudget``: the fleet-wide brake (thread-safe, one per client). Retries are allowed while
  ``retries + 1 <= max(min_retries, share * requests)`` over a sliding window of the last ``window_s`` seconds
  (two half-windows, rotated on use: O(1)). The minimum lets a lone client retry at all; the share stops a dying
  fleet from being flooded by a storm of retries.

Failure kinds (``Outcome``)::

    NOT_SENT      never reached the server                 -> fail over, eject the endpoint for a while
    MAYBE_RAN     sent, no usable response (reset, timeout) -> fail over when retry_maybe_executed
    UNAVAILABLE   the server answered 503 / UNAVAILABLE     -> fail over (the server did not run it)
    REQUEST       the server answered about the request     -> pass the server's error through, never retried
"""
from __future__ import annotations

import dataclasses
import enum
import threading
import time
from typing import Callable, FrozenSet, Optional, Tuple

__all__ = ["Outcome", "Attempt", "RetryPolicy", "RetryBudget"]


class Outcome(enum.Enum):
    NOT_SENT = "not sent"
    MAYBE_RAN = "maybe ran"
    UNAVAILABLE = "unavailable"
    REQUEST = "request error"

    @property
    def reached_server(self) -> bool:
        return self is not Outcome.NOT_SENT


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One failed attempt: on which endpoint, what kind of failure, and the reason in words."""

    endpoint: int
    name: str
    outcome: Outcome
    reason: str


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How many times one request may fail over, and the history of its failed attempts (immutable)."""

    max_retries: int = 2
    retry_maybe_executed: bool = True
    history: Tuple[Attempt, ...] = ()

    def after(self, attempt: Attempt) -> "RetryPolicy":
        """A new policy with ``attempt`` appended to the history."""
        return dataclasses.replace(self, history=self.history + (attempt,))

    def retryable(self, outcome: Outcome) -> bool:
        """Whether a failure of this kind may be sent to another endpoint at all."""
        if outcome is Outcome.REQUEST:
            return False
        return outcome is not Outcome.MAYBE_RAN or self.retry_maybe_executed

    def can_retry(self) -> bool:
        """True when the last attempt failed over-ably and retries are left (attempts = 1 + retries)."""
        if not self.history or not self.retryable(self.history[-1].outcome):
            return False
        return len(self.history) <= self.max_retries

    def tried(self) -> FrozenSet[int]:
        """Endpoints already tried: a retry never goes back to them."""
        return frozenset(a.endpoint for a in self.history)

    def describe(self) -> str:
        """One line per endpoint tried: ``name (outcome): reason``."""
        return "; ".join(f"{a.name} ({a.outcome.value}): {a.reason}" for a in self.history)


class RetryBudget:
    """Retries allowed while ``retries + 1 <= max(min_retries, share * requests)`` over the last ``window_s``.

    The window is two half-windows; counts older than one full window are dropped as time moves on. Counting a
    request is one clock read and one add (no lock: a lost increment under a thread switch only makes the budget
    a request tighter); a retry takes the lock so that concurrent retries cannot overdraw it.
    """

    def __init__(self, share: float = 0.2, *, min_retries: int = 10, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share!r}")
        self.share = float(share)
        self.min_retries = int(min_retries)
        self._half_s = float(window_s) / 2.0
        self._clock = clock
        self._lock = threading.Lock()
        self._epoch = int(clock() // self._half_s)
        self._next_rotation = (self._epoch + 1) * self._half_s
        self._requests = [0, 0]  # [previous half, current half]
        self._retries = [0, 0]

    def _rotate(self, now: float) -> None:
        epoch = int(now // self._half_s)
        if epoch != self._epoch:
            keep = epoch == self._epoch + 1
            self._requests = [self._requests[1] if keep else 0, 0]
            self._retries = [self._retries[1] if keep else 0, 0]
            self._epoch = epoch
            self._next_rotation = (epoch + 1) * self._half_s

    def record_request(self) -> None:
        """Count one user request (not a retry)."""
        now = self._clock()
        if now >= self._next_rotation:
            with self._lock:
                self._rotate(now)
        self._requests[1] += 1

    def try_acquire(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        with self._lock:
            self._rotate(self._clock())
            allowed = max(float(self.min_retries), self.share * sum(self._requests))
            if sum(self._retries) + 1 > allowed:
                return False
            self._retries[1] += 1
            return True

    def snapshot(self) -> Tuple[int, int]:
        """(requests, retries) in the current window."""
        with self._lock:
            self._rotate(self._clock())
            return sum(self._requests), sum(self._retries)


def remaining_s(deadline_at: Optional[float], now: float) -> Optional[float]:
    """Seconds left before ``deadline_at`` (None: no deadline); never negative."""
    if deadline_at is None:
        return None
    return max(0.0, deadline_at - now)
