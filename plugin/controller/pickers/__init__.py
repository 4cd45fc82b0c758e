"""Built-in pickers (how a mode turns ranked, filtered endpoints into load), one per module; each registers itself
with ``tritonmix.controller.plugins``."""
from . import fill, spread  # noqa: F401
