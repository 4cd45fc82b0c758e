"""Service profiles of accelerators serving Stable Diffusion 2.1 base at 512x512, for emulation.

The five hardware figures are those published with the paper's companion repository
(aws-samples/scalable-hw-agnostic-inference): on-demand $ per hour and latency per image.

The CPU profile is ours. A c7i.2xlarge (8 vCPU Sapphire Rapids, us-east-1 on-demand $0.357/h) runs the SD 2.1
base UNet roughly 25-35x slower than an A10G at the same step count (fp32 on AVX-512 cores vs. fp16 on tensor
cores); scaling the 0.68 s of g5.xlarge with Triton by ~30x gives ~20 s per image. Its price per *hour* is the lowest
of the fleet, but its cost per *image* (0.357 / 3600 x 20 = $0.0020) is ~14x inf2's: a pool of last resort for batch
work, never one that meets an interactive SLO.

Each profile serves ``concurrency`` requests in parallel (one image at a time per accelerator for SD at 512x512);
``jitter_s`` is the standard deviation of a normal jitter around ``latency_s`` (clipped at zero), 5% by default.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Union

from ..errors import ConfigError

__all__ = ["Profile", "BUILTIN_PROFILES", "resolve_profile", "validate_profile"]


@dataclasses.dataclass(frozen=True)
class Profile:
    """The service profile of one accelerator unit."""

    name: str
    latency_s: float
    concurrency: int = 1
    jitter_s: float = -1.0  # negative: 5% of latency_s
    accelerator: str = "emulated"
    instance_type: str = ""
    price_per_hour: float = 0.0
    source: str = ""
    #: the model stops a request its client cancelled (a python-backend model checking ``is_cancelled()`` between
    #: its steps); False: it runs every request to its end, as an ensemble's steps or a backend without
    #: cancellation support do (over gRPC a cancelled copy then still holds its slot: load the client no longer sees)
    cancellable: bool = True

    def __post_init__(self) -> None:
        if self.jitter_s < 0:
            object.__setattr__(self, "jitter_s", 0.05 * self.latency_s)

    def scaled(self, time_scale: float) -> "Profile":
        """The same profile with every latency multiplied by ``time_scale`` (0.1 turns 0.67 s into 67 ms)."""
        return dataclasses.replace(self, latency_s=self.latency_s * time_scale, jitter_s=self.jitter_s * time_scale)

    @property
    def max_rps(self) -> float:
        """Saturated throughput: concurrency / latency."""
        return self.concurrency / self.latency_s


_PAPER = "aws-samples/scalable-hw-agnostic-inference, SD 2.1 base 512x512"
BUILTIN_PROFILES: Dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("inf2.xlarge", 0.67, 1, accelerator="neuron", instance_type="inf2.xlarge",
                price_per_hour=0.7582, source=_PAPER),
        Profile("trn1.2xlarge", 0.51, 1, accelerator="neuron", instance_type="trn1.2xlarge",
                price_per_hour=1.3438, source=_PAPER),
        Profile("g5.xlarge-triton", 0.68, 1, accelerator="gpu", instance_type="g5.xlarge",
                price_per_hour=1.006, source=_PAPER),
        Profile("g6.xlarge-triton", 0.96, 1, accelerator="gpu", instance_type="g6.xlarge",
                price_per_hour=0.8048, source=_PAPER),
        Profile("g5.xlarge-cuda", 0.92, 1, accelerator="gpu", instance_type="g5.xlarge",
                price_per_hour=1.006, source=_PAPER),
        Profile("c7i.2xlarge-cpu", 20.0, 1, accelerator="cpu", instance_type="c7i.2xlarge",
                price_per_hour=0.357, source="tritonmix estimate, see module docstring"),
    )
}

_FIELDS = frozenset(f.name for f in dataclasses.fields(Profile))


def validate_profile(value: Union[str, Mapping[str, Any]], where: str = "profile") -> Profile:
    """A builtin profile name, or a mapping with at least ``latency_s``; ConfigError naming the field otherwise."""
    if isinstance(value, str):
        if value not in BUILTIN_PROFILES:
            raise ConfigError(f"{where}: unknown profile {value!r} (builtin: {', '.join(BUILTIN_PROFILES)})")
        return BUILTIN_PROFILES[value]
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a profile name or a mapping")
    base: Dict[str, Any] = {}
    if "base" in value:
        base = dataclasses.asdict(validate_profile(value["base"], f"{where}.base"))
    fields = {k: v for k, v in value.items() if k != "base"}
    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: base, {', '.join(sorted(_FIELDS))})")
    merged = {**base, **fields}
    merged.setdefault("name", "custom")
    if "latency_s" not in merged:
        raise ConfigError(f"{where}: field 'latency_s' is required for a custom profile")
    for key in ("latency_s", "jitter_s", "price_per_hour"):
        if key in fields:
            number = fields[key]
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
                raise ConfigError(f"{where}.{key}: {number!r} is not a finite number")
            if number < 0 or (key == "latency_s" and number == 0):
                raise ConfigError(f"{where}.{key}: {number!r} must be {'> 0' if key == 'latency_s' else '>= 0'}")
    if not isinstance(merged.get("cancellable", True), bool):
        raise ConfigError(f"{where}.cancellable: {merged['cancellable']!r} must be true or false")
    concurrency = merged.get("concurrency", 1)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"{where}.concurrency: {concurrency!r} must be an integer >= 1")
    if "jitter_s" not in fields and base:
        merged["jitter_s"] = -1.0 if "latency_s" in fields else merged["jitter_s"]
    return Profile(**merged)


def resolve_profile(value: Union[str, Mapping[str, Any]], time_scale: float = 1.0) -> Profile:
    """The profile a fleet file names, scaled by the fleet's ``time_scale``."""
    return validate_profile(value).scaled(time_scale)
