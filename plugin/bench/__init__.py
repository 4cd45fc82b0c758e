"""The scenario replay: the paper's mixed fleet under a cosine-wave load with capacity events, per routing policy.

``tritonmix bench scenario [--quick] [--seeds N] [--out DIR]`` runs it; ``run_scenario(spec, out_dir, seeds=N)``
from Python; ``tritonmix bench recompute DIR/raw.json`` (``run.recompute``) makes its summary again from the raw file.
"""
from __future__ import annotations

from .trace import ArrivalTrace, Event, cosine_rate, poisson_arrivals

__all__ = ["ArrivalTrace", "Event", "cosine_rate", "poisson_arrivals"]
