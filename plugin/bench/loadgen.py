"""Open-loop load: each arrival is sent at its time, whatever happened to the ones before (no coordinated omission).

A scheduler thread sleeps until each arrival and hands it to a bounded pool of worker threads; a request's latency
is measured from its *scheduled* arrival, so time spent waiting for a free worker counts against the policy. A sender
may return the endpoints its attempts went to, in order (the first: the policy's choice at dispatch); the record
keeps them (``endpoints``), so that where each request went is known per request, not only from the servers' counters.
"""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["RequestRecord", "replay"]


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request of the replay: when it was due, how long it took end to end, and how it ended."""

    arrival_s: float
    latency_s: float
    ok: bool
    error: str = ""
    endpoints: Tuple[str, ...] = ()  # the endpoint of each attempt, in order (empty: the sender did not say)

    @property
    def endpoint(self) -> str:
        """Where the request was dispatched (its first attempt); "" when unknown."""
        return self.endpoints[0] if self.endpoints else ""


Send = Callable[[], Optional[Sequence[str]]]  # raises on failure; may return the endpoints it tried


def replay(
    arrivals_s: Sequence[float],
    send: Send,
    *,
    on_tick: Optional[Callable[[float], None]] = None,
    max_workers: int = 96,
    clock: Callable[[], float] = time.monotonic,
    start_s: Optional[float] = None,
) -> List[RequestRecord]:
    """Send one request per arrival time (seconds from ``start_s`` on ``clock``, now when None); return one record
    per arrival, in arrival order. Client processes that share a schedule pass the same ``start_s``.

    ``on_tick(t)`` is called from the scheduler thread between arrivals (cheap work only: it delays sends).
    """
    records: List[Optional[RequestRecord]] = [None] * len(arrivals_s)
    start = clock() if start_s is None else start_s

    def run(index: int, due_s: float) -> None:
        try:
            tried = send()
        except Exception as exc:  # noqa: BLE001 - every failure is a record, never a lost request
            records[index] = RequestRecord(due_s, clock() - start - due_s, False, _short(exc),
                                           tuple(getattr(exc, "tritonmix_endpoints", ())))
            return
        records[index] = RequestRecord(due_s, clock() - start - due_s, True, "", tuple(tried or ()))

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="loadgen") as pool:
        for index, due_s in enumerate(arrivals_s):
            delay = due_s - (clock() - start)
            if delay > 0:
                time.sleep(delay)
            if on_tick is not None:
                on_tick(clock() - start)
            pool.submit(run, index, due_s)
    missing = [i for i, r in enumerate(records) if r is None]
    if missing:  # cannot happen unless a worker died: say so rather than drop requests silently
        raise RuntimeError(f"{len(missing)} requests have no record (first: #{missing[0]})")
    return [r for r in records if r is not None]


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
