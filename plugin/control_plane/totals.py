"""The Board's numbers (``board``): merged totals by plane slot, a client's counter growth over slots that may
have changed hands, and the merged view the Controller reads as a dispatcher's stats. numpy throughout: O(n) per
array."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..dispatch_core import DispatchStats
from .report import KeyReport

__all__ = ["Total", "Gauges", "MergedStats", "grown", "growth", "same_slots", "scatter", "latency_terms",
           "merged_stats"]

Names = Tuple[Optional[str], ...]


class Total:
    """One (model, request class) over the fleet: merged counters and gauges, by plane slot."""

    __slots__ = ("arrivals", "successes", "failures", "in_flight", "lat_num", "lat_den")

    def __init__(self, n: int) -> None:
        self.arrivals = 0
        self.successes = np.zeros(n, np.int64)
        self.failures = np.zeros(n, np.int64)
        self.in_flight = np.zeros(n, np.int64)
        self.lat_num = np.zeros(n)
        self.lat_den = np.zeros(n)

    def grow(self, n: int) -> None:
        for attr in self.__slots__[1:]:
            values = getattr(self, attr)
            if values.size < n:
                setattr(self, attr, np.concatenate([values, np.zeros(n - values.size, values.dtype)]))


#: one client's gauges of one key, by plane slot: (in flight, latency numerator, latency weight)
Gauges = Tuple[np.ndarray, np.ndarray, np.ndarray]


def grown(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Per element: new - old, or new where the counter went down (a restart)."""
    return np.where(new >= old, new - old, new)


def growth(new: np.ndarray, old: np.ndarray, same: Optional[np.ndarray]) -> np.ndarray:
    """A client's counter growth per client slot: ``grown`` where the slot holds the same endpoint as in the last
    report (``same``; None: every slot), else the new figure (the slot counts from 0 since its endpoint took it)."""
    if same is None and new.size == old.size:
        return grown(new, old)
    out = new.copy()
    k = min(new.size, old.size)
    mask = np.ones(k, bool) if same is None else same[:k]
    out[:k][mask] = grown(new[:k], old[:k])[mask]
    return out


def same_slots(new: Names, old: Names) -> Optional[np.ndarray]:
    """Per slot of ``new``: it holds the endpoint it held in ``old`` (None: all of them)."""
    if new == old:
        return None
    return np.array([k < len(old) and x is not None and x == old[k] for k, x in enumerate(new)], bool)


def scatter(values: np.ndarray, src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """A client's per-slot figures on the plane's ``n`` slots (``dst`` takes ``values[src]``; the rest 0)."""
    out = np.zeros(n, values.dtype)
    out[dst] = values[src]
    return out


def latency_terms(k: KeyReport) -> Tuple[np.ndarray, np.ndarray]:
    known = ~np.isnan(k.latency_s) & (k.successes > 0)
    w = np.where(known, k.successes, 0).astype(float)
    return np.where(known, k.latency_s, 0.0) * w, w


class MergedStats:
    """A merged dispatcher as the Controller reads one (``stats()``)."""

    __slots__ = ("_s",)

    def __init__(self, s: DispatchStats) -> None:
        self._s = s

    def stats(self) -> DispatchStats:
        return self._s


def merged_stats(t: Total, in_flight: np.ndarray, lat_num: np.ndarray, lat_den: np.ndarray, n: int) -> DispatchStats:
    with np.errstate(invalid="ignore", divide="ignore"):
        latency = np.where(lat_den > 0, lat_num / np.where(lat_den > 0, lat_den, 1.0), np.nan)
    zeros = (0,) * n
    return DispatchStats(tuple(np.maximum(in_flight, 0).tolist()), zeros, tuple(t.successes.tolist()),
                         tuple(t.failures.tolist()), tuple(latency.tolist()), (0.0,) * n)
