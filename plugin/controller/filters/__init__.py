"""Built-in filters, one per module; each registers itself with ``tritonmix.controller.plugins``."""
from . import on_demand  # noqa: F401
