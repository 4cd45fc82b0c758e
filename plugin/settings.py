"""Controller and routing settings: the ``controller:`` section of the fleet file, as frozen dataclasses.

Unknown keys and values of the wrong type or range are ConfigErrors naming ``controller.<field>`` (and
``controller.hedge.<field>`` for the hedging policy, ``HedgeSettings``).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import ConfigError

__all__ = ["ControllerSettings", "HedgeSettings", "ControlPlaneSettings", "read_token"]


@dataclasses.dataclass(frozen=True)
class HedgeSettings:
    """Hedged requests (``controller: {hedge: {...}}``; see ``tritonmix.request.hedging``). Off unless the section is
    given (a ``hedge:`` section is on unless it says ``enabled: false``). An interactive request still outstanding after
    its endpoint's hedge delay gets one copy on another endpoint; the first success wins::

        delay_i = max(min_delay_s, min(delay_factor x usual_i x (1 + ahead // C_i), SLO - 1.5 x usual latency of
                                       the fastest other))

    ahead: our requests already on endpoint i when this one was sent, C_i its max_concurrency (unknown: ahead is not
    counted); a request whose queue ahead leaves no time for a copy gets it at the SLO instead. The copy goes
    only where 1.25 x the endpoint's usual latency fits in what is left of the SLO, while any such endpoint is
    left (``tritonmix.request.hedging``).

    usual_i is endpoint i's usual latency: the dispatcher's EWMA latency (the fleet's max_concurrency / max_rps hint
    until it has one), followed slowly when it rises. Each hedge spends one token of the retry budget
    (``retry_budget_share``). Sync HTTP and gRPC, and both aio clients, hedge."""

    enabled: bool = False
    #: k: hedge after k x the endpoint's expected latency ...
    delay_factor: float = 2.0
    #: ... but never sooner than this
    min_delay_s: float = 0.02
    #: hedged copies per request (1: one extra at most)
    max_hedges: int = 1
    #: hedges over the last 10 s stay within this share of the hedgeable requests (at least 2): a fleet near
    #: capacity queues everywhere, and hedging every late request there only adds load (The Tail at Scale: ~5%)
    max_share: float = 0.05
    #: sync clients: threads of the client's attempt pool (made as needed, shut down by close())
    max_threads: int = 64

    @classmethod
    def from_dict(cls, data: Any) -> "HedgeSettings":
        if isinstance(data, bool):
            return cls(enabled=data)
        if not isinstance(data, Mapping):
            raise ConfigError(f"controller.hedge: must be a mapping or true/false, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in fields)
        if unknown:
            raise ConfigError(f"controller.hedge: unknown field(s) {', '.join(unknown)} "
                              f"(allowed: {', '.join(sorted(fields))})")
        values: Dict[str, Any] = {"enabled": True}
        for name, value in data.items():
            where = f"controller.hedge.{name}"
            if name == "enabled":
                if not isinstance(value, bool):
                    raise ConfigError(f"{where}: {value!r} must be true or false")
            elif name in ("max_hedges", "max_threads"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"{where}: {value!r} must be an integer >= 1")
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value < 0 or (value == 0 and name == "delay_factor") or (name == "max_share" and value > 1):
                    rule = {"delay_factor": "> 0", "max_share": "in [0, 1]"}.get(name, ">= 0")
                    raise ConfigError(f"{where}: {value!r} must be a number {rule}")
                value = float(value)
            values[name] = value
        return cls(**values)

    def to_dict(self) -> Any:
        """What ``from_dict`` reads back as this value: False when off, else the fields that differ from the
        defaults (a section is on unless it says otherwise)."""
        if not self.enabled:
            return False
        return _changed(self, HedgeSettings(enabled=True), skip=("enabled",)) or True


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    """How the control loop and the clients' routing behave. Times in seconds, shares in [0, 1]."""

    #: the control loop's tick
    interval_s: float = 0.5
    #: COST mode fills an endpoint up to this share of its capacity mu_i before overflowing
    target_utilisation: float = 0.8
    #: AUTO stays in COST while lambda <= cost_margin x (capacity of the cheap set at target utilisation)
    cost_margin: float = 0.9
    #: AUTO returns to COST only when lambda <= (cost_margin - hysteresis) x that capacity (no flapping at the edge)
    hysteresis: float = 0.1
    #: AUTO returns to COST after the shortfall has been gone this long
    dwell_s: float = 5.0
    #: share of interactive traffic COST mode leaves on the unused SLO-eligible endpoints, to keep measuring them
    probe_share: float = 0.02
    #: capacity estimator: EWMA weight of a lower observation (fast: a cut shows within ~2 ticks) and of a higher one
    capacity_alpha_down: float = 0.6
    capacity_alpha_up: float = 0.3
    #: demand estimator: the smoothing of an EWMA of this weight, as a window of counted arrivals over at least
    #: round(2 / demand_alpha - 1) ticks (6 at 0.3), widened to hold 32 arrivals (estimators.DemandEstimator)
    demand_alpha: float = 0.3
    #: capacity (req/s) assumed for an endpoint with no max_rps / max_concurrency hint until it is measured
    default_capacity_rps: float = 1.0
    #: share of requests over the SLO (per interval) that counts as a shortfall
    slo_miss_threshold: float = 0.05
    #: consecutive failures that eject an endpoint
    eject_consecutive_failures: int = 3
    #: first ejection lasts this long; each further ejection doubles it, up to eject_max_s
    eject_base_s: float = 2.0
    eject_max_s: float = 60.0
    #: an endpoint whose latency exceeds this multiple of its pool's median (and the SLO) is an outlier
    outlier_latency_factor: float = 3.0
    #: never eject more than this share of the fleet
    max_ejected_share: float = 0.5
    #: below this share of healthy endpoints, spread over all of them (Envoy's panic mode)
    panic_threshold: float = 0.3
    #: a metrics scrape slower than this is abandoned for the tick
    scrape_timeout_s: float = 0.25
    #: retries per request after the first attempt, and the extra load retries may add (Envoy's retry budget)
    max_retries: int = 2
    retry_budget_share: float = 0.2
    #: scorers ("name" or "name:weight") and filters by registry name (empty: the defaults, see tritonmix.controller.plugins)
    scorers: Tuple[str, ...] = ()
    filters: Tuple[str, ...] = ()
    #: how COST and CAPACITY mode turn the ranked endpoints into load, by registry name (tritonmix.controller.plugins)
    cost_picker: str = "cheapest_first"
    capacity_picker: str = "headroom_spread"
    #: serve the client's Prometheus metrics on <metrics_host>:<port> (None: no exporter)
    metrics_port: Optional[int] = None
    metrics_host: str = "127.0.0.1"
    #: start the control loop with the clients (False: static weights from the hints)
    enabled: bool = True
    #: hedged requests (off by default; see HedgeSettings)
    hedge: HedgeSettings = dataclasses.field(default_factory=HedgeSettings)
    #: rescue of interactive requests in flight on an endpoint that stopped answering (``tritonmix.request.rescue``):
    #: an attempt with no answer after max(rescue_factor x its endpoint's usual latency, usual latency + SLO) is
    #: given up and the request sent once to another endpoint; False: attempts wait for the transport's timeouts
    rescue: bool = True
    rescue_factor: float = 4.0

    @classmethod
    def from_dict(cls, data: Any) -> "ControllerSettings":
        if not isinstance(data, Mapping):
            raise ConfigError(f"controller: must be a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in fields)
        if unknown:
            raise ConfigError(f"controller: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(fields)})")
        values = {name: HedgeSettings.from_dict(value) if name == "hedge" else
                  _coerce(name, value, getattr(cls, name, None)) for name, value in data.items()}
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        """The fields that differ from the defaults, as the fleet file writes them (``from_dict`` reads it back as
        this value)."""
        out = _changed(self, ControllerSettings(), skip=("hedge",))
        if self.hedge != HedgeSettings():
            out["hedge"] = self.hedge.to_dict()
        return out


@dataclasses.dataclass(frozen=True)
class ControlPlaneSettings:
    """Which control plane(s) a client follows (``tritonmix.control_plane``). In a fleet file::

        control_plane: 10.0.0.7:8470                        # one replica
        control_plane: [10.0.0.7:8470, 10.0.0.8:8470]       # replicas, in preference order
        control_plane: {replicas: [...], token_file: /run/secrets/plane-token, ca_file: ca.pem}

    The bearer token comes from ``token_file`` when given, else from the environment variable ``token_env``
    (default TRITONMIX_CONTROL_PLANE_TOKEN); it is never written back out or logged. ``ca_file`` verifies a plane
    served over TLS (``https://host:port`` replicas). ``load_channel: false`` turns off the sharing of in-flight
    limits among followers (``tritonmix.control_plane.load``)."""

    replicas: Tuple[str, ...] = ()
    token_file: Optional[str] = None
    token_env: str = "TRITONMIX_CONTROL_PLANE_TOKEN"
    ca_file: Optional[str] = None
    #: share each endpoint's in-flight limit with the plane's other followers (its UDP load channel)
    load_channel: bool = True

    @classmethod
    def from_value(cls, value: Any) -> "ControlPlaneSettings":
        if isinstance(value, ControlPlaneSettings):
            return value
        if isinstance(value, str):
            return cls(replicas=_replicas([x for x in value.split(",") if x.strip()]))
        if isinstance(value, (list, tuple)):
            return cls(replicas=_replicas(value))
        if isinstance(value, Mapping):
            allowed = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(str(k) for k in value if k not in allowed)
            if unknown:
                raise ConfigError(f"control_plane: unknown field(s) {', '.join(unknown)} (allowed: "
                                  f"{', '.join(sorted(allowed))})")
            for key in ("token_file", "token_env", "ca_file"):
                if value.get(key) is not None and not isinstance(value.get(key), str):
                    raise ConfigError(f"control_plane: field '{key}' must be a string")
            if not isinstance(value.get("load_channel", True), bool):
                raise ConfigError("control_plane: field 'load_channel' must be true or false")
            return cls(replicas=_replicas(value.get("replicas") or []), token_file=value.get("token_file"),
                       token_env=value.get("token_env") or cls.token_env, ca_file=value.get("ca_file"),
                       load_channel=value.get("load_channel", True))
        raise ConfigError(f"control_plane: expected host:port, a list of them or a mapping, got {type(value).__name__}")

    def to_value(self) -> Any:
        """What ``from_value`` reads back as this value (the token itself is never written)."""
        rest = _changed(self, ControlPlaneSettings(), skip=("replicas",))
        return {"replicas": list(self.replicas), **rest} if rest else list(self.replicas)

    def token(self) -> Optional[str]:
        """The bearer token (from the file, else the environment), None when neither gives one."""
        return read_token(self.token_file, self.token_env)


def read_token(token_file: Optional[str], token_env: str = ControlPlaneSettings.token_env) -> Optional[str]:
    """A bearer token from ``token_file`` (stripped), else from the environment variable ``token_env``; None when
    neither gives one. ConfigError names an unreadable or empty file."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError as exc:
            raise ConfigError(f"token file {token_file}: {exc.strerror}") from None
        if not text:
            raise ConfigError(f"token file {token_file} is empty")
        return text
    return os.environ.get(token_env) or None


def _replicas(items: Any) -> Tuple[str, ...]:
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip() or any(c.isspace() for c in item.strip()):
            raise ConfigError(f"control_plane: replica {item!r} is not a host:port address")
        out.append(item.strip())
    if not out:
        raise ConfigError("control_plane: name at least one replica (host:port)")
    return tuple(out)


def _changed(value: Any, default: Any, skip: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The fields of a settings dataclass that differ from ``default``'s, tuples as lists."""
    out: Dict[str, Any] = {}
    for field in dataclasses.fields(value):
        mine = getattr(value, field.name)
        if field.name not in skip and mine != getattr(default, field.name):
            out[field.name] = list(mine) if isinstance(mine, tuple) else mine
    return out


_SHARES = {"target_utilisation", "cost_margin", "slo_miss_threshold", "max_ejected_share", "panic_threshold",
           "retry_budget_share", "hysteresis", "probe_share", "capacity_alpha_down", "capacity_alpha_up",
           "demand_alpha"}
#: shares that may be 0 (the others must be > 0)
_ZERO_OK = {"hysteresis", "probe_share", "retry_budget_share", "max_ejected_share", "panic_threshold"}


def _coerce(name: str, value: Any, default: Any) -> Any:
    where = f"controller.{name}"
    if name in ("scorers", "filters"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: must be a list of names")
        return tuple(value)
    if name in ("enabled", "rescue"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} must be true or false")
        return value
    if name == "metrics_host":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {value!r} must be a host name or address")
        return value
    if name in ("cost_picker", "capacity_picker"):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {value!r} must be a picker name")
        return value
    if name == "metrics_port":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
            raise ConfigError(f"{where}: {value!r} must be a port number")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: {value!r} must be an integer >= 0")
        return value
    low_ok = name in _ZERO_OK
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not low_ok):
        raise ConfigError(f"{where}: {value!r} must be a number {'>= 0' if low_ok else '> 0'}")
    if name in _SHARES and value > 1:
        raise ConfigError(f"{where}: {value!r} must be in {'[0' if low_ok else '(0'}, 1]")
    return float(value)
