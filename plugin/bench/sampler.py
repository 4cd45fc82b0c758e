"""Samples every endpoint's Triton metrics during a run: served requests and busy time per endpoint over time.

Counters reset when a server restarts and vanish while it is dead; each sample is turned into a delta against the
previous one, and a counter that went down is taken as a reset (the new value is the delta), as Prometheus' rate()
does. So totals survive kills and restarts; only completions in the last sampling period before a SIGKILL are lost.

Busy time is the EMULATED model's own ``tritonmix_emulated_service_us`` (time a request held one of the endpoint's
slots) where the server exports it, else Triton's ``nv_inference_compute_infer_duration_us``. The two differ only
while requests wait for a slot after a capacity cut: that wait happens inside the model's ``execute``, so Triton
counts it as compute time, where a real pool would have queued the request (and billed nothing for it).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Mapping, Optional

from .. import triton_metrics

__all__ = ["Sample", "MetricsSampler", "scrape_counters", "scrape_pending"]



@dataclasses.dataclass(frozen=True)
class Sample:
    """Deltas over one sampling period ``[from_s, t_s]`` for one endpoint (the gauge ``pending`` read at ``t_s``)."""

    t_s: float
    endpoint: str
    success: float
    failure: float
    busy_s: float
    pending: float = 0.0  # requests queued at the server at the sample (a gauge, not a delta)
    from_s: Optional[float] = None  # the period's start: the previous sample of this endpoint (None: not known)
    #: of ``pending``, the emulation's own parking requests still waiting for an instance (no client's request)
    parks_queued: float = 0.0

    @property
    def queued(self) -> float:
        """Clients' requests queued at the server: ``pending`` less the parking requests in it."""
        return max(0.0, self.pending - self.parks_queued)

    @property
    def mid_s(self) -> float:
        """The middle of the period the deltas happened in (``t_s`` when its start is not known): where a binned
        series places them, since a period's completions are spread over it, not stamped at its end."""
        return self.t_s if self.from_s is None else 0.5 * (self.from_s + self.t_s)


def scrape_counters(metrics_url: str, model: str, timeout_s: float = 0.5) -> Optional[Dict[str, float]]:
    """Cumulative counters of ``model`` on one server (``triton_metrics.scrape``) and ``busy_us``, the emulation's
    service time where the server exports it, else Triton's compute time; None when the server does not answer."""
    text = triton_metrics.fetch(metrics_url, timeout_s)
    if text is None:
        return None
    own = triton_metrics.parse(text).get(model, {})
    values = dict.fromkeys(triton_metrics.SERIES.values(), 0.0)
    values.update(own)
    values["busy_us"] = values["service_us"] if "service_us" in own else values["compute_us"]
    return values


class MetricsSampler:
    """Scrapes ``{endpoint: metrics_url}`` every ``period_s`` in a background thread; ``stop()`` returns samples."""

    def __init__(
        self,
        metrics_urls: Mapping[str, str],
        model: str,
        period_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        parks: Optional[Callable[[str], int]] = None,
    ) -> None:
        """``parks``: the parking requests an endpoint has out (``LocalFleet.parks_out``), read after each scrape:
        those its server does not count as parked (``tritonmix_emulated_parked``) are in its queue."""
        self._urls = dict(metrics_urls)
        self._parks = parks
        self._model = model
        self._period_s = period_s
        self._clock = clock
        self._last: Dict[str, Dict[str, float]] = {}
        self._last_t: Dict[str, float] = {}
        self._samples: List[Sample] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self._urls)), thread_name_prefix="sampler")
        self._thread = threading.Thread(target=self._loop, name="metrics-sampler", daemon=True)
        self._start = 0.0

    def start(self) -> "MetricsSampler":
        self._start = self._clock()
        self._sample_once()  # baseline: deltas start from here
        self._samples.clear()
        self._thread.start()
        return self

    def stop(self) -> List[Sample]:
        self._stop.set()
        self._thread.join()
        self._sample_once()
        self._pool.shutdown(wait=True)
        return list(self._samples)

    def _loop(self) -> None:
        """Sample on a fixed grid (start + k x period), so that slow scrapes do not make the series drift."""
        k = 1
        while not self._stop.wait(max(0.0, self._start + k * self._period_s - self._clock())):
            self._sample_once()
            k = max(k + 1, int((self._clock() - self._start) / self._period_s) + 1)

    def _sample_once(self) -> None:
        now = self._clock() - self._start
        names = list(self._urls)
        results = self._pool.map(lambda n: scrape_counters(self._urls[n], self._model, self._period_s), names)
        for name, counters in zip(names, results):
            if counters is None:
                continue
            previous, since = self._last.get(name), self._last_t.get(name)
            self._last[name], self._last_t[name] = counters, now
            if previous is None:
                continue
            delta = {k: _delta(counters[k], previous[k]) for k in counters}
            parks = max(0.0, self._parks(name) - counters["parked"]) if self._parks is not None else 0.0
            self._samples.append(Sample(now, name, delta["success"], delta["failure"], delta["busy_us"] / 1e6,
                                        counters["pending"], since, parks))


def _delta(current: float, previous: float) -> float:
    return current - previous if current >= previous else current


def scrape_pending(metrics_url: str, model: str, timeout_s: float = 1.0) -> float:
    """Requests queued or executing for ``model`` (Triton's pending request gauge); 0 when unreachable."""
    values = triton_metrics.scrape(metrics_url, model, timeout_s)
    return values["pending"] if values is not None else 0.0
