"""The scenario replay: the paper's mixed fleet under a cosine-wave load with capacity events, per routing policy.

``tritonmix bench scenario [--quick] [--out DIR]`` runs it; ``run_scenario(spec, out_dir)`` from Python.
"""
from __future__ import annotations

from .trace import ArrivalTrace, Event, cosine_rate, poisson_arrivals

__all__ = ["ArrivalTrace", "Event", "cosine_rate", "poisson_arrivals"]
