"""The request path, protocol-neutral: what happens to one request between a drop-in client's ``infer`` and the
endpoint's own tritonclient call. Both protocols' drop-ins (``tritonmix.http``, ``tritonmix.grpc`` and their
``.aio``) use it through ``tritonmix.clients``.

    router       Router: one Dispatcher and Lane per (model, request class), the availability masks, ejection
    retry        Outcome, RetryPolicy (an immutable value with a history), RetryBudget
    attempts     Attempts: one request's bookkeeping over its lane, shared by every driver
    engine       Engine: the failover drivers, blocking (drive) and for coroutines (drive_async)
    hedging      hedged requests: the delay rule, the blocking and asyncio hedging drivers
    callback     FailoverCall: the callback driver (gRPC's async_infer with a callback)
    sequences    Sequences: sticky routing of stateful sequences around any driver
    fanout       server-level calls (is_server_ready, load_model, statistics ...): one answer from many
    baseline     UsualLatency: an endpoint's usual latency (hedge delays, the controller's stall watch)

Imports go one way: router <- retry, ejection; attempts <- router, retry; hedging <- attempts, baseline; engine <- attempts,
hedging; callback, sequences <- engine.
"""
from __future__ import annotations

from .attempts import Attempts
from .engine import Engine
from .hedging import HedgeDelay, SyncHedger
from .retry import Attempt, Outcome, RetryBudget, RetryPolicy
from .router import REQUEST_CLASSES, Router, hint_weights
from .sequences import SequencePins, Sequences

__all__ = [
    "Router", "REQUEST_CLASSES", "hint_weights", "Outcome", "Attempt", "RetryPolicy", "RetryBudget", "Attempts",
    "Engine", "HedgeDelay", "SyncHedger", "SequencePins", "Sequences",
]
