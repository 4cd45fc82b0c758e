"""Generated model repositories for EMULATED accelerators.

``write_emulated_repository(dir, model_name, settings)`` lays out::

    dir/<model_name>/config.pbtxt      ModelConfig protobuf (json_format.ParseDict -> text_format), never a template
    dir/<model_name>/1/model.py        a verbatim copy of tritonmix/emulation/model.py

The profile travels in the config's ``parameters`` (``emulated: "true"``, ``latency_s``, ``jitter_s``,
``concurrency``, ``time_scale``, ``slow_down``, ``profile``, ``endpoint``, ...); ``instance_group.count`` is the
concurrency. A capacity cut or a slow-down rewrites the config and reloads the model through Triton's repository
API (explicit model control), so the server stays up and a restart comes back with the same settings.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from .profiles import Profile

__all__ = ["DEFAULT_MODEL_NAME", "EmulationSettings", "emulation_config", "write_emulated_repository",
           "settings_from_parameters", "MODEL_SOURCE", "sd_model_config"]

DEFAULT_MODEL_NAME = "stable_diffusion"
MODEL_SOURCE = Path(__file__).with_name("model.py")
IMAGE_SIZE = 8


@dataclasses.dataclass(frozen=True)
class EmulationSettings:
    """What an emulated endpoint serves: an unscaled profile plus the fleet's time scale and the current faults."""

    endpoint: str
    profile: Profile
    time_scale: float = 1.0
    concurrency: int = 0  # 0: the profile's own
    slow_down: float = 1.0
    image_size: int = IMAGE_SIZE

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency or self.profile.concurrency

    @property
    def latency_s(self) -> float:
        """Mean latency per request as served: profile latency x time_scale x slow_down."""
        return self.profile.latency_s * self.time_scale * self.slow_down

    @property
    def max_rps(self) -> float:
        return self.effective_concurrency / self.latency_s

    def parameters(self) -> Dict[str, str]:
        return {
            "emulated": "true",
            "endpoint": self.endpoint,
            "profile": self.profile.name,
            "accelerator": self.profile.accelerator,
            "instance_type": self.profile.instance_type,
            "latency_s": repr(self.profile.latency_s),
            "jitter_s": repr(self.profile.jitter_s),
            "concurrency": str(self.effective_concurrency),
            "time_scale": repr(self.time_scale),
            "slow_down": repr(self.slow_down),
            "image_size": str(self.image_size),
        }


def sd_model_config(model_name: str, image_size: int, instances: int,
                    parameters: Mapping[str, str]) -> model_config_pb2.ModelConfig:
    """A python-backend model with the SD ensemble's I/O (prompt -> uint8 image), ``instances`` CPU instances and
    string ``parameters``: what emulated and real single-model SD endpoints share."""
    body: Dict[str, Any] = {
        "name": model_name,
        "backend": "python",
        "max_batch_size": 0,
        "input": [
            {"name": "prompt", "data_type": "TYPE_STRING", "dims": [1]},
            {"name": "seed", "data_type": "TYPE_INT64", "dims": [1], "optional": True},
            {"name": "steps", "data_type": "TYPE_INT32", "dims": [1], "optional": True},
            {"name": "guidance_scale", "data_type": "TYPE_FP32", "dims": [1], "optional": True},
        ],
        "output": [{"name": "image", "data_type": "TYPE_UINT8", "dims": [-1, image_size, image_size, 3]}],
        "instance_group": [{"kind": "KIND_CPU", "count": instances}],
        "parameters": {k: {"string_value": v} for k, v in sorted(parameters.items())},
    }
    return json_format.ParseDict(body, model_config_pb2.ModelConfig())


def emulation_config(model_name: str, settings: EmulationSettings) -> model_config_pb2.ModelConfig:
    """The ModelConfig of the emulated model: SD ensemble I/O, one CPU instance per concurrent request."""
    return sd_model_config(model_name, settings.image_size, settings.effective_concurrency, settings.parameters())


def write_config(repository: Path, model_name: str, settings: EmulationSettings) -> Path:
    """(Re)write ``config.pbtxt``; the caller reloads the model for a running server to see it."""
    path = Path(repository) / model_name / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# tritonmix EMULATED accelerator (generated; emulated: true)\n"
    path.write_text(text + text_format.MessageToString(emulation_config(model_name, settings)))
    return path


def write_emulated_repository(repository: Path, model_name: str, settings: EmulationSettings) -> Path:
    """A model repository holding one emulated model; returns the repository folder."""
    repository = Path(repository)
    version = repository / model_name / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL_SOURCE, version / "model.py")
    write_config(repository, model_name, settings)
    return repository


def settings_from_parameters(parameters: Mapping[str, Any]) -> Dict[str, str]:
    """Flatten a model config's ``parameters`` (as Triton's JSON config API returns them) to plain strings."""
    flat: Dict[str, str] = {}
    for key, value in parameters.items():
        flat[key] = value.get("string_value", "") if isinstance(value, Mapping) else str(value)
    return flat
