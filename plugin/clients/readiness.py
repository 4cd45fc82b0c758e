"""Model readiness as an availability mask (``Router.set_model_ready``), probed, never on the hot path.

Sync clients (``ReadinessRefresher``): once synchronously when a model's first dispatcher is created, then by one
background thread every ``readiness_interval_s`` for every model seen, and sooner (rate-limited to once per
``min_refresh_s``) after an endpoint answered "unknown model / not ready". The aio clients probe from their event
loop instead (``tritonmix.clients.aio``). A probe that cannot reach an endpoint leaves it as unknown (health is the
ejection mask's business, not readiness's).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence

from ..request import Router

__all__ = ["ReadinessRefresher", "Probe"]

logger = logging.getLogger(__name__)

#: probe(i, model): whether endpoint i has the model ready (None: unknown)
Probe = Callable[[int, str], Optional[bool]]


class ReadinessRefresher:
    """Probes model readiness: synchronously for a new model, then in one background thread (module docstring)."""

    def __init__(self, router: Router, probe: Probe, *, interval_s: float = 5.0, min_refresh_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 on_thread_exit: Optional[Callable[[], None]] = None) -> None:
        self.router = router
        self.probe = probe
        self.interval_s = interval_s
        self.min_refresh_s = min_refresh_s
        self.clock = clock
        self.on_thread_exit = on_thread_exit
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._last: Dict[str, float] = {}
        self._thread: Optional[threading.Thread] = None

    def on_new_dispatcher(self, key: Any) -> None:
        model = key[0]
        with self._lock:
            if model in self._last:
                return
            self._last[model] = self.clock()
        self.refresh(model)
        self._ensure_thread()

    def refresh(self, model: str) -> None:
        vacant = self.router.vacant()  # a slot whose endpoint left is not probed
        ready = [None if gone else self._probe_one(i, model) for i, gone in enumerate(vacant)]
        self.router.set_model_ready(model, ready)

    def request_refresh(self, model: str) -> None:
        """After an "unknown model" answer: refresh soon, in the background (rate-limited)."""
        with self._lock:
            last = self._last.get(model, 0.0)
            if self.clock() - last < self.min_refresh_s:
                return
            self._last[model] = -1.0  # due now
        self._wake.set()

    def _probe_one(self, i: int, model: str) -> Optional[bool]:
        try:
            return self.probe(i, model)
        except Exception as exc:  # noqa: BLE001 - unreachable: unknown
            logger.debug("readiness probe of %s on endpoint %d failed: %s", model, i, exc)
            return None

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._loop, name="tritonmix-readiness", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(self.interval_s / 4)
                self._wake.clear()
                if self._stop.is_set():
                    break
                for model in self._due(self.clock()):
                    self.refresh(model)
        finally:
            if self.on_thread_exit is not None:
                self.on_thread_exit()

    def _due(self, now: float) -> Sequence[str]:
        with self._lock:
            due = [m for m, t in self._last.items() if t < 0 or now - t >= self.interval_s]
            for m in due:
                self._last[m] = now
        return due

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
