"""The fleet file's ``endpoints: {kubernetes: {...}}``: where and how to discover a fleet's endpoints live.

::

    endpoints:
      kubernetes:
        namespace: inference        # required: the namespace of the pools' Services and EndpointSlices
        fleet: sd                   # required: Services labelled tritonmix.io/fleet=sd are the fleet's pools
        protocol: http              # http | grpc: which named port of each endpoint the clients call
        kubeconfig: ~/.kube/config  # optional (relative: beside the fleet file); else $KUBECONFIG, else ~/.kube/config
        context: prod               # optional: a kubeconfig context other than the current one
        in_cluster: null            # null: in-cluster when KUBERNETES_SERVICE_HOST is set and no kubeconfig is named
        page_size: 500              # list in chunks of this many objects (limit/continue)
        watch_timeout_s: 300        # each watch asks the API server to end it after this x [1, 2); it is resumed
        read_timeout_s: 75          # a watch silent this long (no event, no bookmark) is reconnected
        backoff_initial_s: 0.5      # reconnect backoff after an error: doubles up to backoff_max_s, with jitter
        backoff_max_s: 30

Every error is a ConfigError naming ``endpoints.kubernetes.<field>``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Dict, Mapping, Optional

from ..errors import ConfigError

__all__ = ["KubernetesSettings"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")


@dataclasses.dataclass(frozen=True)
class KubernetesSettings:
    """Discover a fleet's endpoints from the EndpointSlices of the Services labelled ``tritonmix.io/fleet=<fleet>``
    in ``namespace`` (see ``tritonmix.k8s.discovery.KubernetesSource``)."""

    namespace: str
    fleet: str
    protocol: str = "http"
    kubeconfig: Optional[str] = None
    context: Optional[str] = None
    in_cluster: Optional[bool] = None
    page_size: int = 500
    watch_timeout_s: float = 300.0
    read_timeout_s: float = 75.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    @classmethod
    def from_dict(cls, data: Any) -> "KubernetesSettings":
        where = "endpoints.kubernetes"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: must be a mapping with 'namespace' and 'fleet', got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in fields)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(fields))})")
        for required in ("namespace", "fleet"):
            if required not in data:
                raise ConfigError(f"{where}: field '{required}' is required")
        values: Dict[str, Any] = {}
        for name, value in data.items():
            values[name] = _check(name, value, f"{where}.{name}")
        if values.get("backoff_max_s", cls.backoff_max_s) < values.get("backoff_initial_s", cls.backoff_initial_s):
            raise ConfigError(f"{where}.backoff_max_s: must be >= backoff_initial_s")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        """What ``from_dict`` reads back as this value: namespace, fleet and the fields that differ from the
        defaults."""
        out: Dict[str, Any] = {"namespace": self.namespace, "fleet": self.fleet}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in out and value != field.default:
                out[field.name] = value
        return out


def _check(name: str, value: Any, where: str) -> Any:
    if name == "namespace":
        if not isinstance(value, str) or not _DNS_LABEL.match(value):
            raise ConfigError(f"{where}: {value!r} is not a namespace name (a DNS label: a-z, 0-9, '-')")
        return value
    if name == "fleet":
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            raise ConfigError(f"{where}: {value!r} is not a label value (1-63 letters, digits, '-', '_', '.')")
        return value
    if name == "protocol":
        if value not in ("http", "grpc"):
            raise ConfigError(f"{where}: {value!r} is not one of http, grpc")
        return value
    if name in ("kubeconfig", "context"):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{where}: {value!r} must be a non-empty string")
        return value
    if name == "in_cluster":
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} must be true, false or null")
        return value
    if name == "page_size":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: {value!r} must be an integer >= 1")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: {value!r} must be a number > 0")
    return float(value)
