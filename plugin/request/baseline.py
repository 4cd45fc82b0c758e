"""An endpoint's usual latency: a latency series followed at once when it falls and slowly when it rises, so that
a slow-down or a stall does not redefine "usual" before it is over. Shared by the hedge delay
(``tritonmix.request.hedging``) and the stall watch (``tritonmix.controller.stall``)."""
from __future__ import annotations

import math
from typing import Container, List, Sequence

__all__ = ["USUAL_TAU_S", "UsualLatency"]

#: time constant (s) with which the usual latency follows a rise
USUAL_TAU_S = 5.0


class UsualLatency:
    """``update(now, latest)`` per endpoint: u <- x when x <= u (or u unknown), else u + (1 - exp(-dt / tau)) (x - u);
    unknown (NaN or inf) observations and the ``frozen`` endpoints leave u as it is (once u is known). O(n)."""

    def __init__(self, n: int, tau_s: float = USUAL_TAU_S) -> None:
        self.values: List[float] = [math.nan] * n
        self.tau_s = tau_s
        self._last = math.nan

    def update(self, now: float, latest: Sequence[float], frozen: Container[int] = ()) -> List[float]:
        rise = 1.0 - math.exp(-max(0.0, now - self._last) / self.tau_s) if self._last == self._last else 1.0
        self._last = now
        values = self.values
        for i, x in enumerate(latest):
            u = values[i]
            if not (x == x and x < math.inf) or (u == u and i in frozen):
                continue
            values[i] = x if not u == u or x <= u else u + rise * (x - u)
        return values
