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
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence

from .. import triton_metrics
from .probes import GrpcProber, ProbeSettings, http_get, http_ready

__all__ = ["TritonSample", "SignalSource", "TickScrapes", "HttpScraper", "parse_triton_metrics", "NullSource",
           "ProbeSettings", "ReadinessListener"]

_log = logging.getLogger(__name__)

#: the short names (``tritonmix.triton_metrics.SERIES``) a TritonSample keeps
_FIELDS = ("success", "failure", "queue_us", "compute_us", "pending")


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
    """``poll(now)``: the newest sample per endpoint. A source whose poll starts scrapes (``HttpScraper``) says so
    with ``starts_scrapes = True`` and takes ``poll(now, start=False)``: collect what finished, start nothing."""

    def poll(self, now: float) -> Sequence[Optional[TritonSample]]:
        """The newest sample per endpoint (None: none yet). Must return at once."""

    def close(self) -> None: ...


class TickScrapes:
    """The loop's hold on its source: one scrape per endpoint per tick, and the newest samples between ticks.

        lead(now)    the thread's scrape, SCRAPE_LEAD of an interval before a tick: ``poll(now)`` (starts scrapes)
        poll(now)    the tick's read (the Observer's source): after a lead, a source that ``starts_scrapes`` only
                     collects (``poll(now, start=False)``); else (no lead: ``tick()`` driven alone) it polls as is
        newest(now)  between ticks (the stall watch): what has landed; never starts a scrape (a source that does
                     not start scrapes is not polled again: the tick's samples)
    So the thread scrapes each endpoint once per tick, not once for the lead and again for the tick. O(n) each."""

    def __init__(self, source: SignalSource) -> None:
        self.source = source
        self._collects = bool(getattr(source, "starts_scrapes", False))
        self._led = False
        self._latest: Sequence[Optional[TritonSample]] = ()

    def lead(self, now: float) -> None:
        self._latest = self.source.poll(now)
        self._led = True

    def poll(self, now: float) -> Sequence[Optional[TritonSample]]:
        if self._led and self._collects:
            self._latest = self.source.poll(now, start=False)  # type: ignore[call-arg]
        else:
            self._latest = self.source.poll(now)
        self._led = False
        return self._latest

    @property
    def latest(self) -> Sequence[Optional[TritonSample]]:
        """The samples of the last ``poll`` or ``newest`` (empty before the first)."""
        return self._latest

    def newest(self, now: float) -> Sequence[Optional[TritonSample]]:
        if self._collects:
            self._latest = self.source.poll(now, start=False)  # type: ignore[call-arg]
        return self._latest

    def close(self) -> None:
        self.source.close()


class NullSource:
    """No server signals: the controller works from the dispatchers' own stats."""

    def __init__(self, n: int) -> None:
        self._none: List[Optional[TritonSample]] = [None] * n

    def poll(self, now: float) -> Sequence[Optional[TritonSample]]:
        return self._none

    def follow(self, fleet: Any, vacant: Sequence[bool], reset: Sequence[int]) -> None:
        self._none = [None] * len(fleet.endpoints)

    def close(self) -> None:
        pass


def parse_triton_metrics(text: str, at_s: float, ready: Optional[bool] = None) -> TritonSample:
    """Triton's series per model (the ``model`` label, versions summed) and their sums over models, in one sample
    (``tritonmix.triton_metrics.parse``). O(series)."""
    series = triton_metrics.parse(text)
    totals = series.pop(None)
    models = {m: TritonSample(at_s=at_s, ready=ready, **_fields(v)) for m, v in series.items() if m is not None}
    return TritonSample(at_s=at_s, ready=ready, models=models, **_fields(totals))


def _fields(values: Mapping[str, float]) -> Dict[str, float]:
    return {f: values.get(f, math.nan) for f in _FIELDS}


class HttpScraper:
    """Probes readiness and scrapes ``<metrics_url>`` per endpoint, in a small thread pool.

    Readiness, whatever the protocol (``probes``): HTTP endpoints ``{http|https}://<url>/v2/health/ready``, gRPC
    endpoints ServerReady, both with the client's TLS settings and probe headers (``ProbeSettings``); a 401/403 is
    "up, readiness unknown" (None), never "not ready". ``metrics_urls[i]``: a full URL
    (``http://host:8002/metrics``) or None to skip Triton metrics for endpoint i.

    Two kinds of work, each bounded by ``timeout_s`` per call:
        poll(now)        the tick's scrape of every endpoint (readiness, then metrics) where none is running;
                         ``start=False``: only collect the scrapes that finished (``TickScrapes``)
        probe(indices)   a readiness probe alone of the endpoints given (the loop fires these every fraction of an
                         interval for the endpoints that are down or ejected) where none is running
    Each readiness answer is also handed to the listener (``set_readiness_listener``) on the scraper thread the
    moment it lands: (index, ready, started_s), so that a restarted endpoint is readmitted without waiting for the
    next tick to read the scrape. ``scrapes[i]``: the metrics scrapes of endpoint i so far (cumulative; a
    benchmark divides by the ticks). Threads: min(8, n) workers.
    """

    #: ``poll`` starts scrapes, and takes ``start=False`` to only collect (``SignalSource``)
    starts_scrapes = True

    def __init__(self, ready_urls: Sequence[Optional[str]], metrics_urls: Sequence[Optional[str]], *,
                 timeout_s: float = 0.25, clock: Callable[[], float] = time.monotonic, workers: int = 8,
                 settings: Optional[ProbeSettings] = None,
                 grpc_urls: Optional[Sequence[Optional[str]]] = None) -> None:
        """``ready_urls[i]``: host:port of an HTTP endpoint to probe (None: not over HTTP); ``grpc_urls[i]``:
        host:port of a gRPC endpoint to probe with ServerReady (None: not over gRPC)."""
        self._settings = settings or ProbeSettings()
        self._ready_urls = list(ready_urls)
        n = len(self._ready_urls)
        grpc = list(grpc_urls) if grpc_urls is not None else [None] * n
        self._grpc = [GrpcProber(u, self._settings) if u else None for u in grpc]
        self._metrics_urls = list(metrics_urls)
        self._timeout_s = timeout_s
        self._clock = clock
        # threads start on demand, so a set that grows later (``follow``) can use them all
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="tritonmix-scrape")
        self._futures: List[Optional[concurrent.futures.Future]] = [None] * n
        self._probing: List[Optional[concurrent.futures.Future]] = [None] * n
        self._latest: List[Optional[TritonSample]] = [None] * n
        self._listener: Optional[ReadinessListener] = None
        self._closed = False
        #: metrics scrapes per endpoint so far (cumulative)
        self.scrapes: List[int] = [0] * n
        #: per slot, bumped when another endpoint takes it: a scrape or probe of the one before is dropped
        self._generation: List[int] = [0] * n
        self._metrics_by_name: Mapping[str, str] = {}

    def follow(self, fleet: Any, vacant: Sequence[bool], reset: Sequence[int]) -> None:
        """The set changed (``tritonmix.request.slots``): slots up to the fleet's; a new or reset slot gets its
        endpoint's URLs, fresh counts, and no sample (one of the endpoint before it that lands late is dropped);
        a vacant slot loses its URLs (its scrape is an empty sample). Call it from the thread that polls."""
        eps = fleet.endpoints
        n, old = len(eps), len(self._ready_urls)
        for column, fresh in ((self._ready_urls, None), (self._grpc, None), (self._metrics_urls, None),
                              (self._futures, None), (self._probing, None), (self._latest, None), (self.scrapes, 0),
                              (self._generation, 0)):
            column.extend([fresh] * (n - old))
        for i in sorted(set(reset) | set(range(old, n))):
            e = eps[i]
            prober = self._grpc[i]
            if prober is not None:
                prober.close()
            self._ready_urls[i] = e.url if e.url and e.protocol == "http" else None
            self._grpc[i] = GrpcProber(e.url, self._settings) if e.url and e.protocol == "grpc" else None
            url = self._metrics_by_name.get(e.name) or getattr(e, "metrics_url", None)
            self._metrics_urls[i] = _full_metrics_url(url) if url else None
            self._futures[i] = self._probing[i] = self._latest[i] = None
            self.scrapes[i] = 0
            self._generation[i] += 1
        for i, gone in enumerate(vacant):
            if gone and (self._ready_urls[i] or self._grpc[i] is not None or self._metrics_urls[i]):
                if self._grpc[i] is not None:
                    self._grpc[i].close()  # type: ignore[union-attr]
                self._ready_urls[i] = self._grpc[i] = self._metrics_urls[i] = None
                self._latest[i] = None
                self._generation[i] += 1

    @classmethod
    def for_fleet(cls, fleet: object, metrics_urls: Optional[Mapping[str, str]] = None,
                  settings: Optional[ProbeSettings] = None, **kwargs: object) -> "HttpScraper":
        """Readiness of every endpoint over its own protocol; metrics URLs from ``metrics_urls`` by name, else the
        endpoint's ``metrics_url`` attribute when the fleet file has one."""
        ready, grpc, metrics = [], [], []
        for e in fleet.endpoints:  # type: ignore[attr-defined]
            ready.append(e.url if e.url and e.protocol == "http" else None)
            grpc.append(e.url if e.url and e.protocol == "grpc" else None)
            url = (metrics_urls or {}).get(e.name) or getattr(e, "metrics_url", None)
            metrics.append(_full_metrics_url(url) if url else None)
        scraper = cls(ready, metrics, settings=settings, grpc_urls=grpc, **kwargs)  # type: ignore[arg-type]
        scraper._metrics_by_name = dict(metrics_urls or {})
        return scraper

    def set_readiness_listener(self, listener: Optional["ReadinessListener"]) -> None:
        """``listener(index, ready, started_s)`` on the scraper thread after each readiness answer; quick."""
        self._listener = listener

    def poll(self, now: float, start: bool = True) -> Sequence[Optional[TritonSample]]:
        """The newest sample per endpoint, after collecting the scrapes that finished; ``start``: also start a
        scrape of every endpoint with none running."""
        for i, future in enumerate(self._futures):
            if future is not None and future.done():
                self._futures[i] = None
                try:
                    self._latest[i] = future.result()
                except Exception as exc:  # noqa: BLE001 - a scrape error is a signal, not a crash
                    _log.debug("scrape of endpoint %d failed: %s", i, type(exc).__name__)
            if start and self._futures[i] is None and not self._closed:
                self._futures[i] = self._submit(self._scrape, i)
        return self._latest

    def probe(self, indices: Sequence[int]) -> None:
        """Start a readiness probe of each endpoint in ``indices`` that has no probe or scrape running."""
        for i in indices:
            if self._closed:
                return
            running = self._probing[i]
            scraping = self._futures[i]
            if (running is None or running.done()) and (scraping is None or scraping.done()):
                self._probing[i] = self._submit(self._ready_only, i)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        for prober in self._grpc:
            if prober is not None:
                prober.close()

    def _submit(self, fn: Callable[[int], object], i: int) -> Optional[concurrent.futures.Future]:
        try:
            return self._pool.submit(fn, i)
        except RuntimeError:  # shut down meanwhile
            return None

    def _ready(self, i: int) -> Optional[bool]:
        """Probe endpoint i's readiness and hand the answer to the listener. None: not probed or unknown."""
        started_s = self._clock()
        generation = self._generation[i]
        if self._ready_urls[i]:
            ready = http_ready(self._ready_urls[i], self._timeout_s, self._settings)  # type: ignore[arg-type]
        elif self._grpc[i] is not None:
            ready = self._grpc[i].ready(self._timeout_s)  # type: ignore[union-attr]
        else:
            return None
        listener = self._listener
        if listener is not None and not self._closed and generation == self._generation[i]:
            try:
                listener(i, ready, started_s)
            except Exception:  # noqa: BLE001 - the listener's failure must not lose the sample
                _log.exception("readiness listener failed")
        return ready

    def _ready_only(self, i: int) -> None:
        self._ready(i)

    def _scrape(self, i: int) -> TritonSample:
        ready = self._ready(i)
        text = None
        if self._metrics_urls[i]:
            self.scrapes[i] += 1  # one scrape of endpoint i runs at a time: no lost update
            _, text = http_get(self._metrics_urls[i], self._timeout_s, self._settings)  # type: ignore[arg-type]
        at_s = self._clock()
        if text is None:
            return TritonSample(at_s=at_s, ready=ready)
        return parse_triton_metrics(text, at_s, ready)


#: ``listener(index, ready, started_s)``: one readiness answer as it lands (see HttpScraper)
ReadinessListener = Callable[[int, Optional[bool], float], None]


def _full_metrics_url(url: str) -> str:
    """``host:port`` (the fleet file's form) -> ``http://host:port/metrics``; full URLs pass unchanged."""
    return url if "://" in url else f"http://{url}/metrics"
