"""The fleet file: the endpoints of a mixed Triton fleet, their prices and capacity, and the fleet-wide policy.

One format for the local fleet (``tritonmix.local.LocalFleet``) and for the clients (``tritonmix.http`` ...)::

    slo_ms: 1500                      # latency target of interactive requests
    mode: auto                        # cost | capacity | auto
    time_scale: 1.0                   # emulation only: multiplies every emulated latency (0.1: 10x faster)
    emulated_model: stable_diffusion  # emulation only: the model name emulated endpoints serve (SD ensemble I/O)
    controller: {interval_s: 0.5}     # see tritonmix.settings.ControllerSettings
    control_plane: 127.0.0.1:8470     # optional: follow a control plane (or a list of replicas; see
                                      # tritonmix.settings.ControlPlaneSettings); absent: each client decides alone
    endpoints:
      - name: inf2-a
        url: 10.0.0.5:8000            # absent for a local endpoint (it gets free ports)
        metrics_url: 10.0.0.5:8002    # optional: Triton's metrics port, scraped by the controller
        protocol: http                # http | grpc
        accelerator: neuron           # gpu | neuron | cpu | any label
        instance_type: inf2.xlarge
        price_per_hour: 0.7582
        capacity_type: on-demand      # on-demand | spot
        max_rps: 1.4                  # optional capacity hints
        max_concurrency: 1
        profile: inf2.xlarge          # local only: an emulation profile (name or mapping) ...
        model_repository: ./repo      # ... or a real model repository (local only)

Or the endpoints are discovered live from Kubernetes (the Services labelled ``tritonmix.io/fleet=sd`` and their
EndpointSlices; every field in ``tritonmix.k8s.settings``): the fleet then has no static endpoints and a
``discovery`` value that ``tritonmix.discovery.source_for(fleet)`` turns into a source::

    endpoints:
      kubernetes: {namespace: inference, fleet: sd, protocol: http}

Every error is a ``ConfigError`` naming the endpoint and the field.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

from .errors import ConfigError
from .k8s.settings import KubernetesSettings
from .settings import ControllerSettings, ControlPlaneSettings

__all__ = ["EndpointSpec", "Fleet", "PROTOCOLS", "MODES", "CAPACITY_TYPES", "parse_url"]

PROTOCOLS = ("http", "grpc")
MODES = ("cost", "capacity", "auto")
CAPACITY_TYPES = ("on-demand", "spot")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,62}$")
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9\-.]*[A-Za-z0-9])?)$")


def parse_url(url: str, where: str = "url") -> Tuple[str, int]:
    """``host:port`` (no scheme, as tritonclient takes it) -> (host, port); ConfigError when malformed."""
    if not isinstance(url, str) or "://" in url or "/" in url:
        raise ConfigError(f"{where}: {url!r} is not host:port (no scheme, no path)")
    host, sep, port = url.rpartition(":")
    if not sep or not host or not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: {url!r} is not host:port with a port in 1..65535")
    return host, int(port)


@dataclasses.dataclass(frozen=True)
class EndpointSpec:
    """One Triton server of the fleet (or, for a local endpoint, one to start)."""

    name: str
    accelerator: str
    price_per_hour: float
    url: Optional[str] = None
    protocol: str = "http"
    instance_type: str = ""
    capacity_type: str = "on-demand"
    max_rps: Optional[float] = None
    max_concurrency: Optional[int] = None
    profile: Union[None, str, Mapping[str, Any]] = None
    model_repository: Optional[str] = None
    metrics_url: Optional[str] = None
    #: the pool (autoscaled group of like replicas, a Kubernetes Service) this endpoint belongs to; its accelerator
    #: when not set
    pool: Optional[str] = None

    @property
    def pool_name(self) -> str:
        return self.pool or self.accelerator

    @property
    def is_local(self) -> bool:
        """A local endpoint has no URL yet: ``LocalFleet`` starts it and fills the URL in."""
        return self.url is None

    def to_dict(self) -> Dict[str, Any]:
        """The fleet file's entry for this endpoint: the fields set, without defaults. An endpoint with a URL (a
        local one that was started included) is written as a remote one: its profile and repository are how it
        was started, not how to reach it."""
        out: Dict[str, Any] = {"name": self.name}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "name" or value == field.default or value is None:
                continue
            if self.url is not None and field.name in ("profile", "model_repository"):
                continue
            out[field.name] = dict(value) if isinstance(value, Mapping) else value
        return out

    def with_url(self, url: str, metrics_url: Optional[str] = None) -> "EndpointSpec":
        return dataclasses.replace(self, url=url, metrics_url=metrics_url or self.metrics_url)


@dataclasses.dataclass(frozen=True)
class Fleet:
    """A validated fleet: endpoints in file order (that order is the dispatchers' endpoint index), or none and a
    ``discovery`` setting that names where they are found live."""

    endpoints: Tuple[EndpointSpec, ...]
    slo_ms: float = 1000.0
    mode: str = "auto"
    time_scale: float = 1.0
    controller: ControllerSettings = dataclasses.field(default_factory=ControllerSettings)
    source: Optional[str] = None
    emulated_model: str = "stable_diffusion"
    #: the control plane(s) the clients follow (None: each client runs its own controller)
    control_plane: Optional[ControlPlaneSettings] = None
    #: where the endpoints are discovered live (``endpoints: {kubernetes: ...}``); ``endpoints`` is then empty
    discovery: Optional[KubernetesSettings] = None

    # -- access ----------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[EndpointSpec]:
        return iter(self.endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)

    def __getitem__(self, name: str) -> EndpointSpec:
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        raise KeyError(f"no endpoint named {name!r} in the fleet (have: {', '.join(self.names)})")

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(e.name for e in self.endpoints)

    def index(self, name: str) -> int:
        return self.names.index(self[name].name)

    @property
    def slo_s(self) -> float:
        return self.slo_ms / 1000.0

    def with_urls(self, urls: Mapping[str, str], metrics_urls: Optional[Mapping[str, str]] = None) -> "Fleet":
        """A copy whose endpoints named in ``urls`` get those URLs (how LocalFleet fills in local endpoints)."""
        metrics = metrics_urls or {}
        endpoints = tuple(e.with_url(urls[e.name], metrics.get(e.name)) if e.name in urls else e
                          for e in self.endpoints)
        return dataclasses.replace(self, endpoints=endpoints)

    # -- writing ---------------------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """The fleet file as a mapping: ``Fleet.from_dict(f.to_dict())`` equals ``f`` (but for ``source``; a local
        endpoint that was started is written with its URL, see ``EndpointSpec.to_dict``)."""
        out: Dict[str, Any] = {"slo_ms": self.slo_ms, "mode": self.mode}
        if self.time_scale != 1.0:
            out["time_scale"] = self.time_scale
        if self.emulated_model != "stable_diffusion":
            out["emulated_model"] = self.emulated_model
        controller = self.controller.to_dict()
        if controller:
            out["controller"] = controller
        if self.control_plane is not None:
            out["control_plane"] = self.control_plane.to_value()
        if self.discovery is not None:
            out["endpoints"] = {"kubernetes": self.discovery.to_dict()}
        else:
            out["endpoints"] = [e.to_dict() for e in self.endpoints]
        return out

    def to_yaml(self, path: Union[str, Path, None] = None) -> str:
        """The fleet file as YAML text; with ``path``, also written there (whole or not at all: a temporary file
        beside it, then renamed)."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            file = Path(path)
            tmp = file.with_name(f".{file.name}.tmp")
            tmp.write_text(text)
            tmp.replace(file)
        return text

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "Fleet":
        import yaml

        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"fleet file {file} does not exist")
        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"fleet file {file} is not valid YAML: {exc}".replace("\n", " ")) from exc
        base = file.resolve().parent
        fleet = cls.from_dict(data, base_dir=base)
        return dataclasses.replace(fleet, source=str(file))

    @classmethod
    def from_urls(cls, urls: Union[str, Sequence[str]], protocol: str = "http", **fleet_fields: Any) -> "Fleet":
        """A fleet of plain endpoints, as the clients build from ``url="h1:p1,h2:p2"`` (equal prices, no hints)."""
        items = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else list(urls)
        endpoints = [
            {"name": url, "url": url, "protocol": protocol, "accelerator": "unknown", "price_per_hour": 0.0}
            for url in items
            if url
        ]
        return cls.from_dict({"endpoints": endpoints, **fleet_fields})

    @classmethod
    def from_dict(cls, data: Any, base_dir: Optional[Path] = None) -> "Fleet":
        if not isinstance(data, Mapping):
            raise ConfigError(f"a fleet is a mapping with an 'endpoints' list, got {type(data).__name__}")
        _no_unknown_keys(data, _FLEET_KEYS, "fleet")
        raw_endpoints = data.get("endpoints")
        discovery = _discovery(raw_endpoints, base_dir)
        if discovery is None and (not isinstance(raw_endpoints, list) or not raw_endpoints):
            raise ConfigError("fleet: 'endpoints' must be a non-empty list or a mapping {kubernetes: {...}}")
        endpoints = () if discovery is not None else tuple(
            _endpoint(item, i, base_dir) for i, item in enumerate(raw_endpoints))
        seen: Dict[str, int] = {}
        for i, endpoint in enumerate(endpoints):
            if endpoint.name in seen:
                raise ConfigError(f"endpoint '{endpoint.name}': duplicate name (endpoints {seen[endpoint.name]} and {i})")
            seen[endpoint.name] = i
        mode = data.get("mode", "auto")
        if mode not in MODES:
            raise ConfigError(f"fleet: field 'mode': {mode!r} is not one of {', '.join(MODES)}")
        return cls(
            endpoints=endpoints,
            slo_ms=_positive(data.get("slo_ms", 1000.0), "fleet: field 'slo_ms'"),
            mode=mode,
            time_scale=_positive(data.get("time_scale", 1.0), "fleet: field 'time_scale'"),
            controller=ControllerSettings.from_dict(data.get("controller") or {}),
            emulated_model=_model_name(data.get("emulated_model", "stable_diffusion")),
            control_plane=(ControlPlaneSettings.from_value(data["control_plane"])
                           if data.get("control_plane") is not None else None),
            discovery=discovery,
        )


_FLEET_KEYS = frozenset({"endpoints", "slo_ms", "mode", "time_scale", "controller", "emulated_model",
                         "control_plane"})
_ENDPOINT_KEYS = frozenset(f.name for f in dataclasses.fields(EndpointSpec))


def _no_unknown_keys(data: Mapping[str, Any], allowed: frozenset, where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _discovery(value: Any, base_dir: Optional[Path]) -> Optional[KubernetesSettings]:
    """``endpoints: {kubernetes: {...}}`` -> its settings (a relative ``kubeconfig`` is the fleet file's neighbour);
    None for a list of endpoints."""
    if not isinstance(value, Mapping):
        return None
    if set(value) != {"kubernetes"}:
        raise ConfigError(f"fleet: 'endpoints' as a mapping names one source, 'kubernetes' (got: "
                          f"{', '.join(sorted(str(k) for k in value)) or 'nothing'})")
    settings = KubernetesSettings.from_dict(value["kubernetes"])
    kubeconfig = settings.kubeconfig
    if kubeconfig and base_dir is not None and not kubeconfig.startswith("~") and not Path(kubeconfig).is_absolute():
        settings = dataclasses.replace(settings, kubeconfig=str(base_dir / kubeconfig))
    return settings


def _model_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or ":" in value:
        raise ConfigError(f"fleet: field 'emulated_model': {value!r} must be 1-63 letters, digits, '.', '_' or '-'")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return float(value)


def _positive(value: Any, where: str) -> float:
    number = _number(value, where)
    if number <= 0:
        raise ConfigError(f"{where}: {value!r} must be > 0")
    return number


def _endpoint(item: Any, index: int, base_dir: Optional[Path]) -> EndpointSpec:
    if not isinstance(item, Mapping):
        raise ConfigError(f"endpoint {index}: must be a mapping, got {type(item).__name__}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"endpoint {index}: field 'name': {name!r} must be 1-63 letters, digits, '.', ':', '_' or '-'")
    where = f"endpoint '{name}'"
    _no_unknown_keys(item, _ENDPOINT_KEYS, where)
    for required in ("accelerator", "price_per_hour"):
        if required not in item:
            raise ConfigError(f"{where}: field '{required}' is required")
    price = _number(item["price_per_hour"], f"{where}: field 'price_per_hour'")
    if price < 0:
        raise ConfigError(f"{where}: field 'price_per_hour': {price} must be >= 0")
    url = item.get("url")
    if url is not None:
        parse_url(url, f"{where}: field 'url'")
    if item.get("metrics_url") is not None:
        parse_url(item["metrics_url"], f"{where}: field 'metrics_url'")
    protocol = item.get("protocol", "http")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where}: field 'protocol': {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    capacity_type = item.get("capacity_type", "on-demand")
    if capacity_type not in CAPACITY_TYPES:
        raise ConfigError(f"{where}: field 'capacity_type': {capacity_type!r} is not one of {', '.join(CAPACITY_TYPES)}")
    if url is None and item.get("profile") is None and item.get("model_repository") is None:
        raise ConfigError(f"{where}: a local endpoint (no 'url') needs a 'profile' or a 'model_repository'")
    return EndpointSpec(
        name=name,
        accelerator=_text(item["accelerator"], f"{where}: field 'accelerator'"),
        price_per_hour=price,
        url=url,
        protocol=protocol,
        instance_type=_text(item.get("instance_type", ""), f"{where}: field 'instance_type'", allow_empty=True),
        capacity_type=capacity_type,
        max_rps=None if item.get("max_rps") is None else _positive(item["max_rps"], f"{where}: field 'max_rps'"),
        max_concurrency=_concurrency(item.get("max_concurrency"), where),
        profile=_profile(item.get("profile"), url, where),
        model_repository=_repository(item.get("model_repository"), url, item.get("profile"), where, base_dir),
        metrics_url=item.get("metrics_url"),
        pool=None if item.get("pool") is None else _text(item["pool"], f"{where}: field 'pool'"),
    )


def _text(value: Any, where: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ConfigError(f"{where}: {value!r} must be a non-empty string")
    return value


def _concurrency(value: Any, where: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: field 'max_concurrency': {value!r} must be an integer >= 1")
    return value


def _profile(value: Any, url: Optional[str], where: str) -> Union[None, str, Mapping[str, Any]]:
    if value is None:
        return None
    if url is not None:
        raise ConfigError(f"{where}: field 'profile' is for local endpoints only (this one has a url)")
    if not isinstance(value, (str, Mapping)):
        raise ConfigError(f"{where}: field 'profile': must be a profile name or a mapping")
    from .emulation.profiles import validate_profile  # noqa: PLC0415 - the fleet file may name emulation profiles

    validate_profile(value, f"{where}: field 'profile'")
    return value


def _repository(value: Any, url: Optional[str], profile: Any, where: str, base_dir: Optional[Path]) -> Optional[str]:
    if value is None:
        return None
    if url is not None:
        raise ConfigError(f"{where}: field 'model_repository' is for local endpoints only (this one has a url)")
    path = Path(_text(value, f"{where}: field 'model_repository'"))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)
