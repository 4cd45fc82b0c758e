"""The decision log: every mode switch, ejection, re-admission, health change and panic, with the figures behind it.

Each decision is a frozen dataclass kept in a bounded in-memory log (``Controller.decisions()``) and written as one
structured log line: ``logging.getLogger("tritonmix.controller.decisions")`` at INFO with
``extra={"tritonmix_decision": decision.as_dict()}``.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Any, Deque, Dict, List, Mapping, Optional

__all__ = ["Decision", "DecisionLog", "KINDS"]

_log = logging.getLogger("tritonmix.controller.decisions")

#: mode: a mode switch; eject / readmit / eject_refused: outlier ejection; down / up: readiness;
#: panic / panic_over: too few healthy endpoints; plane: a client following a control plane started or stopped following
KINDS = ("mode", "eject", "readmit", "eject_refused", "down", "up", "panic", "panic_over", "capacity_cut", "plane")


@dataclasses.dataclass(frozen=True)
class Decision:
    at_s: float                        # the controller's clock
    kind: str                          # one of KINDS
    summary: str                       # one human line
    endpoint: Optional[str] = None
    old: Optional[str] = None          # mode switches: from ...
    new: Optional[str] = None          # ... to
    reasons: tuple = ()
    figures: Mapping[str, float] = dataclasses.field(default_factory=dict)
    model: Optional[str] = None        # capacity cuts, and mode switches where several models are planned

    def as_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["figures"] = dict(self.figures)
        d["reasons"] = list(self.reasons)
        return d


class DecisionLog:
    """Bounded, thread-safe (the loop appends, clients read)."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._items: Deque[Decision] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.total = 0

    def add(self, decision: Decision) -> Decision:
        with self._lock:
            self._items.append(decision)
            self.total += 1
        figures = " ".join(f"{k}={_fmt(v)}" for k, v in decision.figures.items())
        _log.info("%s %s", decision.summary, figures, extra={"tritonmix_decision": decision.as_dict()})
        return decision

    def items(self, kind: Optional[str] = None) -> List[Decision]:
        with self._lock:
            return [d for d in self._items if kind is None or d.kind == kind]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
