"""What ``tritonmix k8s render`` needs beyond the fleet file: ``RenderValues``, validated, with the values a user
must set named in the error when missing (never guessed).

Required (no default: they depend on the user's cluster, registry and storage):

    namespace             where everything goes (the Role, its binding and the DNS names of the plane's replicas
                          depend on it)
    triton_image          the Triton server image, e.g. nvcr.io/nvidia/tritonserver:<tag>-py3 (a Neuron pool needs
                          an image with the Neuron runtime)
    model_repository      where Triton loads models from: s3://..., gs://..., as://... (Triton reads these
                          itself), an absolute path inside the image, or pvc://CLAIM[/SUBPATH]; ``{pool}`` and
                          ``{accelerator}`` are replaced per pool (model_repository/<accelerator>/ in this repo)
    plane_image           an image with tritonmix installed (the control plane runs ``tritonmix control-plane``)
    prometheus_url        the Prometheus KEDA queries (serverAddress of every ScaledObject trigger)
    prometheus_namespace  the namespace of the Prometheus that scrapes the plane (the plane's NetworkPolicy
                          lets it in)
    max_replicas          the most replicas KEDA may give a pool (a budget: ours to enforce, not to guess)

Per-pool values (``max_replicas``, ``min_replicas``, ``model_repository``, ``node_pool``, ``accelerator_resource``)
take one value for every pool or a mapping ``{pool: value, "*": default}``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..errors import ConfigError

__all__ = ["RenderValues", "REQUIRED", "ACCELERATOR_RESOURCES", "PerPool"]

PerPool = Union[Any, Mapping[str, Any]]

#: required value -> (CLI flag, what it is): the error for a missing one names both
REQUIRED: Dict[str, Tuple[str, str]] = {
    "namespace": ("--namespace", "the namespace every object goes to"),
    "triton_image": ("--triton-image", "the Triton server image, e.g. nvcr.io/nvidia/tritonserver:<tag>-py3"),
    "model_repository": ("--model-repository", "the model repository: s3://, gs://, as://, an absolute path in "
                         "the image or pvc://CLAIM[/SUBPATH]; {pool} and {accelerator} are replaced per pool"),
    "plane_image": ("--plane-image", "an image with tritonmix installed, for the control plane"),
    "prometheus_url": ("--prometheus-url", "the Prometheus that KEDA queries, e.g. http://prometheus.monitoring:9090"),
    "prometheus_namespace": ("--prometheus-namespace", "the namespace of the Prometheus that scrapes the plane"),
    "max_replicas": ("--max-replicas", "the most replicas KEDA may give a pool (N, or POOL=N per pool)"),
}

#: accelerator label -> the extended resource a pod asks for (None: no accelerator). Other labels need
#: ``accelerator_resource`` for their pool.
ACCELERATOR_RESOURCES: Dict[str, Optional[str]] = {
    "gpu": "nvidia.com/gpu",
    "nvidia": "nvidia.com/gpu",
    "neuron": "aws.amazon.com/neuron",
    "inferentia": "aws.amazon.com/neuron",
    "trainium": "aws.amazon.com/neuron",
    "cpu": None,
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"[^"\\]*"\s*'
_MATCHERS = re.compile(rf"^{_MATCHER}(,{_MATCHER})*$")
_REPO_SCHEMES = ("s3://", "gs://", "as://", "pvc://")


@dataclasses.dataclass(frozen=True)
class RenderValues:
    """The render's values (module docstring). Times in seconds."""

    namespace: str
    triton_image: str
    model_repository: PerPool
    plane_image: str
    prometheus_url: str
    prometheus_namespace: str
    max_replicas: PerPool
    #: the tritonmix.io/fleet label of every object (default: the fleet file's name without .yaml)
    fleet_name: str = ""
    min_replicas: PerPool = 1
    #: Karpenter NodePool per pool (karpenter.sh/nodepool); without one, the pool's instance_type pins its nodes
    node_pool: PerPool = None
    #: "RESOURCE[:COUNT]" per pool when its accelerator is not in ACCELERATOR_RESOURCES (or to ask for more)
    accelerator_resource: PerPool = None
    #: extra label matchers for the KEDA query, e.g. 'namespace="ml"' (one Prometheus, several fleets)
    metric_selector: str = ""
    #: the Secret (key "token") holding the plane's bearer token: created by the user, never rendered
    plane_token_secret: str = "tritonmix-control-plane-token"
    plane_port: int = 8470
    #: preStop sleep: the endpoint turns terminating, clients stop sending, in-flight requests finish
    drain_s: int = 15
    #: Triton's own wait for in-flight requests after SIGTERM (--exit-timeout-secs)
    exit_timeout_s: int = 30
    #: KEDA's pollingInterval (its default is 30)
    polling_interval_s: int = 15
    #: a ServiceAccount for the Triton pods (cloud credentials for an s3:// or gs:// repository)
    triton_service_account: Optional[str] = None
    #: pods allowed to reach the plane and the Triton pods (the clients); label your clients with it
    client_labels: Mapping[str, str] = dataclasses.field(default_factory=lambda: {"tritonmix.io/client": "true"})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], default_fleet_name: str = "") -> "RenderValues":
        """Validated values; a ConfigError lists every missing required value with its flag, or names the bad one."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in values if k not in fields)
        if unknown:
            raise ConfigError(f"render: unknown value(s) {', '.join(unknown)} (allowed: {', '.join(sorted(fields))})")
        missing = [k for k in REQUIRED if values.get(k) in (None, "", {})]
        if missing:
            lines = "; ".join(f"{k} ({REQUIRED[k][0]}: {REQUIRED[k][1]})" for k in missing)
            raise ConfigError(f"render: missing required value(s): {lines}")
        data = {k: v for k, v in values.items() if v is not None}
        data.setdefault("fleet_name", default_fleet_name)
        out = cls(**data)
        out._check()
        return out

    def _check(self) -> None:
        if not _DNS_LABEL.match(self.namespace):
            raise ConfigError(f"render: namespace {self.namespace!r} is not a DNS label (lowercase, digits, '-')")
        if not self.fleet_name or not _LABEL_VALUE.match(self.fleet_name) or len(self.fleet_name) > 63:
            raise ConfigError(f"render: fleet_name {self.fleet_name!r} must be a Kubernetes label value "
                              "(1-63 letters, digits, '-', '_', '.'; --fleet-name)")
        for name in ("triton_image", "plane_image"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
                raise ConfigError(f"render: {name} {value!r} is not an image reference")
        if not re.match(r"^https?://[^\s/]+", str(self.prometheus_url)):
            raise ConfigError(f"render: prometheus_url {self.prometheus_url!r} must be an http:// or https:// URL")
        if not _DNS_LABEL.match(str(self.prometheus_namespace)):
            raise ConfigError(f"render: prometheus_namespace {self.prometheus_namespace!r} is not a DNS label")
        if not _DNS_LABEL.match(self.plane_token_secret):
            raise ConfigError(f"render: plane_token_secret {self.plane_token_secret!r} is not a DNS label")
        if self.metric_selector and not _MATCHERS.match(self.metric_selector):
            raise ConfigError(f"render: metric_selector {self.metric_selector!r} is not PromQL label matchers")
        for name, low in (("plane_port", 1), ("drain_s", 0), ("exit_timeout_s", 0), ("polling_interval_s", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or value > 65535:
                raise ConfigError(f"render: {name} {value!r} must be an integer >= {low}")
        for key, value in self.client_labels.items():
            if not _LABEL_VALUE.match(str(value)):
                raise ConfigError(f"render: client_labels {key}={value!r}: not a label value")

    # ---- per pool ---------------------------------------------------------------------------------------------
    def for_pool(self, name: str, pool: str) -> Any:
        """The value ``name`` for ``pool``: the pool's entry of a mapping (else its "*" entry), or the one value."""
        value = getattr(self, name)
        if isinstance(value, Mapping):
            if pool in value:
                return value[pool]
            return value.get("*")
        return value

    def replicas(self, pool: str) -> Tuple[int, int]:
        """(min, max) replicas of ``pool``; min >= 1: at zero replicas the plane has no endpoint of the pool left
        to compute its figure from, so KEDA would never scale it back up."""
        low, high = self.for_pool("min_replicas", pool), self.for_pool("max_replicas", pool)
        if high is None:
            raise ConfigError(f"render: missing required value max_replicas for pool '{pool}' "
                              f"(--max-replicas {pool}=N)")
        for what, value in (("min_replicas", low), ("max_replicas", high)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"render: {what} for pool '{pool}': {value!r} must be an integer >= 1")
        if low > high:
            raise ConfigError(f"render: pool '{pool}': min_replicas {low} > max_replicas {high}")
        return low, high

    def repository(self, pool: str, accelerator: str) -> str:
        """The pool's model repository URI, ``{pool}`` / ``{accelerator}`` filled in."""
        value = self.for_pool("model_repository", pool)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"render: missing required value model_repository for pool '{pool}' "
                              f"(--model-repository {pool}=URI)")
        try:
            uri = value.format(pool=pool, accelerator=accelerator)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"render: model_repository {value!r}: only {{pool}} and {{accelerator}} may be "
                              f"replaced ({exc})") from None
        if not (uri.startswith(_REPO_SCHEMES) or uri.startswith("/")) or any(c.isspace() for c in uri):
            raise ConfigError(f"render: model_repository {uri!r} for pool '{pool}' must start with "
                              f"{', '.join(_REPO_SCHEMES)} or be an absolute path in the image")
        if uri.startswith("pvc://") and not _DNS_LABEL.match(uri[len("pvc://"):].split("/", 1)[0]):
            raise ConfigError(f"render: model_repository {uri!r}: pvc://CLAIM[/SUBPATH] needs a claim name")
        return uri

    def resource(self, pool: str, accelerator: str) -> Optional[Tuple[str, int]]:
        """(extended resource, count) the pool's pods ask for, or None (a CPU pool)."""
        value = self.for_pool("accelerator_resource", pool)
        if value is None:
            if accelerator not in ACCELERATOR_RESOURCES:
                raise ConfigError(f"render: pool '{pool}': accelerator {accelerator!r} has no known device resource "
                                  f"(known: {', '.join(sorted(ACCELERATOR_RESOURCES))}); set it with "
                                  f"--accelerator-resource {pool}=RESOURCE[:COUNT], e.g. nvidia.com/gpu:1, or "
                                  f"{pool}=none")
            name = ACCELERATOR_RESOURCES[accelerator]
            return (name, 1) if name else None
        if value == "none":
            return None
        text, _, count = str(value).partition(":")
        if not _RESOURCE.match(text) or (count and (not count.isdigit() or int(count) < 1)):
            raise ConfigError(f"render: accelerator_resource {value!r} for pool '{pool}' is not RESOURCE[:COUNT] "
                              "(e.g. nvidia.com/gpu:1, aws.amazon.com/neuroncore:2) or none")
        return text, int(count or 1)
