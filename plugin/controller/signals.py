"""Signals from the servers: Triton's Prometheus metrics and readiness, scraped off the request path.

``TritonSample`` is one scrape of one endpoint (cumulative counters summed over models). A ``SignalSource`` hands the
controller the newest sample per endpoint without ever blocking: ``HttpScraper`` scrapes in a small thread pool, each
request bounded by ``scrape_timeout_s``; a tick takes whatever has finished and starts a new scrape only where none is
still running, so a slow or dead metrics endpoint costs the loop nothing but staleness (``now - sample.at_s``).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Sequence

__all__ = ["TritonSample", "SignalSource", "HttpScraper", "parse_triton_metrics", "NullSource"]

_log = logging.getLogger(__name__)

_COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_infer_duration_us": "compute_us",
    "nv_inference_pending_request_count": "pending",
}


@dataclasses.dataclass(frozen=True)
class TritonSample:
    """One scrape. Counters are cumulative (NaN: not scraped); ``ready`` is None when readiness was not probed.
    The counters are the sums over every model; ``models`` holds the same per model (Triton's ``model`` label),
    empty when the source has no per-model series."""

    at_s: float
    ready: Optional[bool] = None
    success: float = math.nan
    failure: float = math.nan
    queue_us: float = math.nan
    compute_us: float = math.nan
    pending: float = math.nan
    models: Mapping[str, "TritonSample"] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def has_metrics(self) -> bool:
        return self.success == self.success

    def for_model(self, model: str) -> "TritonSample":
        """The series of ``model``: its own when the scrape has per-model series (a model the server does not
        list has none: metrics NaN, readiness kept), else the endpoint's sums (a source without a breakdown)."""
        if not self.models:
            return self
        own = self.models.get(model)
        return own if own is not None else TritonSample(at_s=self.at_s, ready=self.ready)


class SignalSource(Protocol):
    def poll(self, now: float) -> Sequence[Optional[TritonSample]]:
        """The newest sample per endpoint (None: none yet). Must return at once."""

    def close(self) -> None: ...


class NullSource:
    """No server signals: the controller works from the dispatchers' own stats."""

    def __init__(self, n: int) -> None:
        self._none: List[Optional[TritonSample]] = [None] * n

    def poll(self, now: float) -> Sequence[Optional[TritonSample]]:
        return self._none

    def close(self) -> None:
        pass


def parse_triton_metrics(text: str, at_s: float, ready: Optional[bool] = None) -> TritonSample:
    """Triton's series per model (the ``model`` label, versions summed) and their sums over models, in one sample
    (prometheus_client's text parser). O(series)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: Dict[str, float] = {}
    per_model: Dict[str, Dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        field = _COUNTERS.get(family.name)
        if field is None:
            continue
        for sample in family.samples:
            if sample.name in (family.name, family.name + "_total"):
                totals[field] = totals.get(field, 0.0) + sample.value
                model = sample.labels.get("model")
                if model is not None:
                    own = per_model.setdefault(model, {})
                    own[field] = own.get(field, 0.0) + sample.value
    models = {m: TritonSample(at_s=at_s, ready=ready, **_fields(v)) for m, v in per_model.items()}
    return TritonSample(at_s=at_s, ready=ready, models=models, **_fields(totals))


def _fields(values: Mapping[str, float]) -> Dict[str, float]:
    return {f: values.get(f, math.nan) for f in _COUNTERS.values()}


class HttpScraper:
    """Scrapes ``http://<url>/v2/health/ready`` (HTTP endpoints) and ``<metrics_url>`` per endpoint.

    ``metrics_urls[i]``: a full URL (``http://host:8002/metrics``) or None to skip Triton metrics for endpoint i.
    Threads: min(8, n) workers; each HTTP call times out after ``timeout_s``.
    """

    def __init__(self, ready_urls: Sequence[Optional[str]], metrics_urls: Sequence[Optional[str]], *,
                 timeout_s: float = 0.25, clock: Callable[[], float] = time.monotonic, workers: int = 8) -> None:
        self._ready_urls = list(ready_urls)
        self._metrics_urls = list(metrics_urls)
        self._timeout_s = timeout_s
        self._clock = clock
        n = len(self._ready_urls)
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, min(workers, n)), thread_name_prefix="tritonmix-scrape")
        self._futures: List[Optional[concurrent.futures.Future]] = [None] * n
        self._latest: List[Optional[TritonSample]] = [None] * n
        self._closed = False

    @classmethod
    def for_fleet(cls, fleet: object, metrics_urls: Optional[Mapping[str, str]] = None, **kwargs: object) -> "HttpScraper":
        """Ready URLs from the HTTP endpoints; metrics URLs from ``metrics_urls`` by name, else the endpoint's
        ``metrics_url`` attribute when the fleet file has one."""
        ready, metrics = [], []
        for e in fleet.endpoints:  # type: ignore[attr-defined]
            ready.append(f"http://{e.url}/v2/health/ready" if e.url and e.protocol == "http" else None)
            url = (metrics_urls or {}).get(e.name) or getattr(e, "metrics_url", None)
            metrics.append(_full_metrics_url(url) if url else None)
        return cls(ready, metrics, **kwargs)  # type: ignore[arg-type]

    def poll(self, now: float) -> Sequence[Optional[TritonSample]]:
        for i, future in enumerate(self._futures):
            if future is not None and future.done():
                self._futures[i] = None
                try:
                    self._latest[i] = future.result()
                except Exception as exc:  # noqa: BLE001 - a scrape error is a signal, not a crash
                    _log.debug("scrape of endpoint %d failed: %s", i, exc)
            if self._futures[i] is None and not self._closed:
                self._futures[i] = self._pool.submit(self._scrape, i)
        return self._latest

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _scrape(self, i: int) -> TritonSample:
        ready = None
        if self._ready_urls[i]:
            ready = _get(self._ready_urls[i], self._timeout_s) is not None
        text = _get(self._metrics_urls[i], self._timeout_s) if self._metrics_urls[i] else None
        at_s = self._clock()
        if text is None:
            return TritonSample(at_s=at_s, ready=ready)
        return parse_triton_metrics(text, at_s, ready)


def _get(url: str, timeout_s: float) -> Optional[str]:
    """Body of a 200 answer, None on any error or other status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http URLs we built
            return response.read().decode("utf-8", "replace") if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _full_metrics_url(url: str) -> str:
    """``host:port`` (the fleet file's form) -> ``http://host:port/metrics``; full URLs pass unchanged."""
    return url if "://" in url else f"http://{url}/metrics"
