"""Built-in scorers and filters, one per module; each registers itself with ``tritonmix.controller.plugins``."""
from . import cost, headroom, latency, on_demand, spot  # noqa: F401
