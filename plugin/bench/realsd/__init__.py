"""Model repositories serving the REAL tiny Stable Diffusion pipeline (torch on CPU or CUDA), not an emulation.

``write_real_sd_repository(dir, device="cuda", instances=2, ...)`` lays out::

    dir/stable_diffusion/config.pbtxt     ModelConfig protobuf (json_format.ParseDict -> text_format)
    dir/stable_diffusion/1/model.py       a verbatim copy of tritonmix/bench/realsd/model.py
    dir/stable_diffusion/1/tiny_sd.py     a verbatim copy of tritonmix/exporters/tiny.py (fallback import)

Instances are ``KIND_CPU`` whatever the device (the model moves its pipeline to ``device`` itself), so the same
repository loads on a machine without a GPU when ``device="cpu"``; ``instance_group.count`` is the concurrency,
and ``LocalFleet.set_capacity`` changes it by a reload as for any real repository.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Dict

from tritonclient.grpc import model_config_pb2

from ...emulation.repository import sd_model_config
from ...model_config import write_config

__all__ = ["RealSDSettings", "real_sd_config", "write_real_sd_repository", "MODEL_SOURCE", "DEFAULT_MODEL_NAME"]

DEFAULT_MODEL_NAME = "stable_diffusion"
MODEL_SOURCE = Path(__file__).with_name("model.py")
TINY_SOURCE = Path(__file__).resolve().parents[2] / "exporters" / "tiny.py"


def _tiny_source() -> Path:
    try:
        from ...exporters import tiny

        return Path(tiny.__file__)
    except ImportError:  # pragma: no cover - the exporters need torch
        return TINY_SOURCE


@dataclasses.dataclass(frozen=True)
class RealSDSettings:
    """What one real endpoint runs."""

    device: str = "cpu"  # cuda | cpu
    instances: int = 1
    steps: int = 10
    guidance_scale: float = 7.5
    image_size: int = 64
    threads: int = 0  # torch intra-op threads per instance (0: torch's default)
    weights_seed: int = 0

    def __post_init__(self) -> None:
        if self.device not in ("cuda", "cpu"):
            raise ValueError(f"device {self.device!r} is not cuda or cpu")
        if self.image_size % 8 or self.image_size < 8:
            raise ValueError(f"image_size {self.image_size} must be a positive multiple of 8")
        if self.instances < 1 or self.steps < 1:
            raise ValueError("instances and steps must be >= 1")

    def parameters(self) -> Dict[str, str]:
        return {
            "real": "true",
            "device": self.device,
            "steps": str(self.steps),
            "guidance_scale": repr(self.guidance_scale),
            "image_size": str(self.image_size),
            "threads": str(self.threads),
            "weights_seed": str(self.weights_seed),
        }


def real_sd_config(model_name: str, settings: RealSDSettings) -> model_config_pb2.ModelConfig:
    return sd_model_config(model_name, settings.image_size, settings.instances, settings.parameters())


def write_real_sd_repository(repository: Path, settings: RealSDSettings,
                             model_name: str = DEFAULT_MODEL_NAME) -> Path:
    """A model repository holding the real tiny SD model; returns the repository folder."""
    repository = Path(repository)
    version = repository / model_name / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL_SOURCE, version / "model.py")
    shutil.copyfile(_tiny_source(), version / "tiny_sd.py")
    write_config(repository / model_name, real_sd_config(model_name, settings),
                 f"tritonmix REAL tiny Stable Diffusion on {settings.device} (generated)")
    return repository
