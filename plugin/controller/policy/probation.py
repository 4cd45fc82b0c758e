"""Slow start after a latency ejection: the interactive weight of the endpoints on probation."""
from __future__ import annotations

import dataclasses
from typing import Sequence

from ..model import ModelPlan

__all__ = ["with_trial_share"]


def with_trial_share(plan: ModelPlan, trial: Sequence[int], share: float) -> ModelPlan:
    """Each endpoint in ``trial`` (on probation: readmitted when the backoff of a latency ejection ended) gets
    ``share`` of the interactive weight, whatever the plan gave it: less when the plan gave more (a slow start, as
    Envoy's slow_start_config), and the trial share when it gave nothing because its last known service time missed
    the SLO (the trial is how the estimator learns whether it recovered; a failed one ejects it again at once). The
    other endpoints keep their proportions in the rest. Batch weights are unchanged (batch may wait). O(n)::

        s     = min(share x |trial|, 0.5)
        w'_i  = s / |trial|                   i in trial
        w'_j  = w_j (1 - s) / sum_(k not in trial) w_k
    """
    weights = plan.interactive_weights
    members = set(trial)
    rest = sum(w for i, w in enumerate(weights) if i not in members)
    if not members or rest <= 0.0:
        return plan
    total = min(share * len(members), 0.5)
    out = [total / len(members) if i in members else w * (1.0 - total) / rest for i, w in enumerate(weights)]
    return dataclasses.replace(plan, interactive_weights=tuple(out))
