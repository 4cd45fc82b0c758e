"""A clock that moves only when told to."""
from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> float:
        self.now_s += seconds
        return self.now_s

    def set(self, now_s: float) -> None:
        if now_s < self.now_s:
            raise ValueError(f"time cannot go back ({now_s} < {self.now_s})")
        self.now_s = now_s
