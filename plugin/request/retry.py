"""Retry policy of the drop-in clients: which failures fail over, how often, and how much extra load retries may add.

Two pieces, after urllib3's ``util/retry.py`` and Envoy's retry budget:

- ``RetryPolicy``: an immutable value. Each failed attempt makes a new policy with one more ``Attempt`` in its
  ``history`` (``policy = policy.after(attempt)``); ``can_retry()`` and ``tried()`` read that history. An attempt
  says whether the request *never reached the server* (connection refused, DNS, connect timeout: safe to send
  anywhere) or *the server may have run it* (reset or timeout after the request was sent, 503 / UNAVAILABLE).
  Inference is idempotent, so both fail over by default; ``retry_maybe_executed=False`` keeps only the first kind.
- ``RetryBudget``: the fleet-wide brake (thread-safe, one per client). Retries are allowed while
  ``retries + 1 <= max(min_retries, share * requests)`` over a sliding window of the last ``window_s`` seconds
  (the dispatch core's ``SlidingCount``: two half-windows, rotated on use, O(1)). The minimum lets a lone client
  retry at all; the share stops a dying fleet from being flooded by a storm of retries.

Failure kinds (``Outcome``)::

    NOT_SENT      never reached the server                 -> fail over, eject the endpoint for a while
    MAYBE_RAN     sent, no usable response (reset, timeout) -> fail over when retry_maybe_executed
    UNAVAILABLE   the server answered 503 / UNAVAILABLE     -> fail over (the server did not run it)
    REQUEST       the server answered about the request     -> pass the server's error through, never retried
                  (but Triton's python backend's own failure, ``backend_failed``, is MAYBE_RAN: its stub process
                  died or hung, which says nothing about the request)
    STALLED       no answer within the rescue limit         -> fail over (the rescue copy): the first copy of a
                  (``tritonmix.request.rescue``)               request is not charged to the budget, a further one
                                                               (the copy stalled too) is, like any retry
"""
from __future__ import annotations

import dataclasses
import enum
import re
import threading
import time
from typing import Callable, FrozenSet, Tuple

from ..dispatch_core import SlidingCount

__all__ = ["Outcome", "Attempt", "RetryPolicy", "RetryBudget", "backend_failed"]


#: Triton's python backend (2.x, ``python_be.cc``) answers INTERNAL (HTTP 500) with exactly this when its stub
#: process returned no response and no error of the model's own (the stub died, or was stopped, mid-batch); a model
#: that raises gets its own message instead ("Failed to process the request(s) for model instance ...")
_STUB_NO_RESPONSE = "Failed to process the requests."
#: ... and this when a response says it carries an error but the error could not be read from the shared memory
#: between the stub and the server (``infer_response.cc``): the stub failed while answering (the scenario's thawed
#: endpoint answered it), whatever the model did
_STUB_LOST_ERROR = "Failed to retrieve the response error."
#: ... and this when the server could not allocate an output the response names (after a SIGSTOP, a garbage size
#: read from a response the stub never finished writing); another server can serve the request, as it could after
#: a real allocation failure
_OUTPUT_NOT_RESERVED = re.compile(r"^failed to reserve \d+ bytes in output tensor buffer")


def backend_failed(message: str) -> bool:
    """Whether a server's INTERNAL / 500 error is Triton's python backend failing rather than the request: its stub
    process is not healthy (after a crash or a long SIGSTOP), returned nothing for the batch, lost the error it
    answered, or answered an output the server could not allocate. Another endpoint can serve the same request; the
    same endpoint keeps failing until its stub is restarted."""
    text = message.strip()
    return (text in (_STUB_NO_RESPONSE, _STUB_LOST_ERROR) or ("Stub process" in text and "is not healthy" in text)
            or _OUTPUT_NOT_RESERVED.match(text) is not None)


class Outcome(enum.Enum):
    NOT_SENT = "not sent"
    MAYBE_RAN = "maybe ran"
    UNAVAILABLE = "unavailable"
    REQUEST = "request error"
    STALLED = "stalled"

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
        return outcome not in (Outcome.MAYBE_RAN, Outcome.STALLED) or self.retry_maybe_executed

    def can_retry(self) -> bool:
        """True when the last attempt failed over-ably and retries are left (attempts = 1 + retries)."""
        if not self.history or not self.retryable(self.history[-1].outcome):
            return False
        return len(self.history) <= self.max_retries

    def stalls(self) -> int:
        """Attempts that got no answer within their rescue limit."""
        return sum(1 for a in self.history if a.outcome is Outcome.STALLED)

    def tried(self) -> FrozenSet[int]:
        """Endpoints already tried: a retry never goes back to them."""
        return frozenset(a.endpoint for a in self.history)

    def describe(self) -> str:
        """One line per endpoint tried: ``name (outcome): reason``."""
        return "; ".join(f"{a.name} ({a.outcome.value}): {a.reason}" for a in self.history)


class RetryBudget:
    """Retries allowed while ``retries + 1 <= max(min_retries, share * requests)`` over the last ``window_s``.

    Both counts are ``SlidingCount``s of the dispatch core (two half-windows, O(1)). ``requests`` is public: each
    lane of the client counts its user requests into it (``Lane.begin``, compiled, no lock); a retry takes the
    lock so that concurrent retries cannot overdraw the budget. ``granted`` and ``refused`` count the answers of
    ``try_acquire`` since the budget was made.
    """

    def __init__(self, share: float = 0.2, *, min_retries: int = 10, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share!r}")
        self.share = float(share)
        self.min_retries = int(min_retries)
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        #: user requests (not retries) in the window; the lanes add to it
        self.requests = SlidingCount(window_s, now)
        self._retries = SlidingCount(window_s, now)
        self.granted = 0
        self.refused = 0

    def record_request(self) -> None:
        """Count one user request (not a retry); the lanes do it themselves (``Lane.begin``)."""
        self.requests.add(self._clock())

    def try_acquire(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        with self._lock:
            now = self._clock()
            allowed = max(float(self.min_retries), self.share * self.requests.total(now))
            if self._retries.total(now) + 1 > allowed:
                self.refused += 1
                return False
            self._retries.add(now)
            self.granted += 1
            return True

    def snapshot(self) -> Tuple[int, int]:
        """(requests, retries) in the current window."""
        with self._lock:
            now = self._clock()
            return self.requests.total(now), self._retries.total(now)
