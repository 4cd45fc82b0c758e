"""Built-in scorers, one per module; each registers itself with ``tritonmix.controller.plugins``."""
from . import cost, headroom, latency, spot  # noqa: F401
