"""The plane's signal source, by role: the Triton scraper while this replica leads; the leader's samples (one GET
of ``/v1/samples`` per tick, in the background) while it stands by. Samples travel with their age, not their
clock (replicas' monotonic clocks differ): ``sample_to_dict`` / ``sample_from_dict``. Replicas that follow a discovery
source number their slots independently, so the leader's samples come with its slots' names and land on this
replica's slots of the same name (``follow`` keeps this replica's names)."""
from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import ssl
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..controller.signals import HttpScraper, TritonSample
from .report import http_call

__all__ = ["RoleSource", "sample_to_dict", "sample_from_dict"]

_log = logging.getLogger(__name__)


class RoleSource:
    """The Controller's signal source: the Triton scraper while this replica leads; while it stands by, the
    leader's samples (fetched once per tick in the background, their ages carried over to this clock)."""

    #: ``poll(now, start=False)`` only collects (``controller.signals.SignalSource``)
    starts_scrapes = True

    def __init__(self, scraper: HttpScraper, n: int, clock: Any, headers: Mapping[str, str],
                 ssl_context: Optional[ssl.SSLContext]) -> None:
        self.scraper = scraper
        self.mirror: Optional[str] = None          # base URL of the replica mirrored, None: scrape ourselves
        self._n, self._clock = n, clock
        #: this replica's endpoint per slot (None: vacant), for mirrored samples
        self.names: Sequence[Optional[str]] = ()
        self._headers, self._ssl = dict(headers), ssl_context
        self._latest: List[Optional[TritonSample]] = [None] * n
        #: what the controller last read (served to standbys on /v1/samples)
        self.latest: Sequence[Optional[TritonSample]] = [None] * n
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tritonmix-plane-mirror")
        self._future: Optional[concurrent.futures.Future] = None
        self.mirrored = 0

    @property
    def scrapes(self) -> Optional[List[int]]:
        return getattr(self.scraper, "scrapes", None)

    def poll(self, now: float, *args: Any, **kwargs: Any) -> Sequence[Optional[TritonSample]]:
        """The controller's read (its thread only); ``latest`` keeps it for /v1/samples."""
        self.latest = self._poll(now, *args, **kwargs)
        return self.latest

    def _poll(self, now: float, *args: Any, **kwargs: Any) -> Sequence[Optional[TritonSample]]:
        mirror = self.mirror
        if mirror is None:
            if not getattr(self.scraper, "starts_scrapes", False):
                return self.scraper.poll(now)
            return self.scraper.poll(now, *args, **kwargs)
        f = self._future
        if f is not None and f.done():
            self._future = None
            try:
                self._latest = f.result()
                self.mirrored += 1
            except Exception as exc:  # noqa: BLE001 - a failed mirror costs freshness only
                _log.debug("mirroring samples from %s failed: %s", mirror, exc)
        if self._future is None and kwargs.get("start", True):
            try:
                self._future = self._pool.submit(self._fetch, mirror)
            except RuntimeError:
                pass
        if len(self._latest) != self._n:  # fetched over the slots before a change: the slots now
            self._latest = (list(self._latest) + [None] * self._n)[: self._n]
        return self._latest

    def follow(self, fleet: Any, vacant: Sequence[bool], reset: Sequence[int]) -> None:
        """The plane's slots changed (the Controller's ``follow``): the scraper follows; mirrored samples are
        matched by the new names."""
        if hasattr(self.scraper, "follow"):
            self.scraper.follow(fleet, vacant, reset)
        n = len(fleet.endpoints)
        self.names = tuple(None if v else e.name for e, v in zip(fleet.endpoints, vacant))
        self._n = n
        latest = list(self._latest[:n]) + [None] * (n - len(self._latest))
        for i in reset:
            if i < n:
                latest[i] = None
        self._latest = latest

    def probe(self, indices: Sequence[int]) -> None:
        if self.mirror is None and hasattr(self.scraper, "probe"):
            self.scraper.probe(indices)

    def set_readiness_listener(self, listener: Any) -> None:
        if hasattr(self.scraper, "set_readiness_listener"):
            self.scraper.set_readiness_listener(listener)

    def close(self) -> None:
        self.scraper.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, base: str) -> List[Optional[TritonSample]]:
        status, body = http_call(base + "/v1/samples", headers=self._headers, timeout_s=1.0, ssl_context=self._ssl)
        if status != 200:
            raise OSError(f"HTTP {status}")
        now = self._clock()
        raw = json.loads(body)
        rows, theirs = raw["samples"], raw.get("names")
        samples = [None if r is None else sample_from_dict(r, now) for r in rows]
        if theirs is None or not self.names:  # a leader of a fixed list: its slots are ours
            return (samples + [None] * self._n)[: self._n]
        by_name = {name: s for name, s in zip(theirs, samples) if name is not None}
        return [by_name.get(name) if name is not None else None for name in self.names][: self._n]


def sample_to_dict(s: TritonSample, now: float) -> Dict[str, Any]:
    def num(x: float) -> Optional[float]:
        return x if x == x else None

    return {"age_s": now - s.at_s, "ready": s.ready, "success": num(s.success), "failure": num(s.failure),
            "queue_us": num(s.queue_us), "compute_us": num(s.compute_us), "pending": num(s.pending),
            "models": {m: sample_to_dict(v, now) for m, v in s.models.items()}}


def sample_from_dict(d: Mapping[str, Any], now: float) -> TritonSample:
    def num(x: Any) -> float:
        return math.nan if x is None else float(x)

    return TritonSample(at_s=now - float(d["age_s"]), ready=d.get("ready"), success=num(d.get("success")),
                        failure=num(d.get("failure")), queue_us=num(d.get("queue_us")),
                        compute_us=num(d.get("compute_us")), pending=num(d.get("pending")),
                        models={m: sample_from_dict(v, now) for m, v in (d.get("models") or {}).items()})
