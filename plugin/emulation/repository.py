"""Generated model repositories for EMULATED accelerators.

``write_emulated_repository(dir, model_name, settings)`` lays out::

    dir/<model_name>/config.pbtxt      ModelConfig protobuf (json_format.ParseDict -> text_format), never a template
    dir/<model_name>/1/model.py        a verbatim copy of tritonmix/emulation/model.py

    dir/<model_name>/control.json       the live faults: {"concurrency": C, "slow_down": f, "park_epoch": k}

The profile travels in the config's ``parameters`` (``emulated: "true"``, ``latency_s``, ``jitter_s``,
``concurrency``, ``time_scale``, ``slow_down``, ``profile``, ``endpoint``, ``control_file``, ...);
``instance_group.count`` is the most requests it can ever serve at once (``EmulationSettings.instance_count``).
A capacity change within that count or a slow-down only rewrites ``control.json`` (atomically: a temporary file,
then a rename), which the running model re-reads within ~50 ms: no reload, nothing held (``LocalFleet`` also parks
the instances a cut takes away; model.py says how). Only a capacity above the
instance count needs a new config and a reload. A restart reads the same files, so it comes back with the same
settings.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping

from tritonclient.grpc import model_config_pb2

from .. import model_config
from ..model_config import build_config
from .profiles import Profile

__all__ = ["DEFAULT_MODEL_NAME", "EmulationSettings", "emulation_config", "write_emulated_repository",
           "settings_from_parameters", "MODEL_SOURCE", "sd_model_config", "write_control", "read_control",
           "CONTROL_FILE", "PARK_PROMPT"]

DEFAULT_MODEL_NAME = "stable_diffusion"
MODEL_SOURCE = Path(__file__).with_name("model.py")
IMAGE_SIZE = 8
CONTROL_FILE = "control.json"  # the name model.py reads beside config.pbtxt
PARK_PROMPT = b"\x00tritonmix-emulation:park"  # model.py's own copy must match (it cannot import tritonmix)


@dataclasses.dataclass(frozen=True)
class EmulationSettings:
    """What an emulated endpoint serves: an unscaled profile plus the fleet's time scale and the current faults."""

    endpoint: str
    profile: Profile
    time_scale: float = 1.0
    concurrency: int = 0  # 0: the profile's own
    slow_down: float = 1.0
    image_size: int = IMAGE_SIZE
    instances: int = 0  # 0: as many as the concurrency; more leaves room to raise the capacity without a reload
    park_epoch: int = 0  # parking requests of an older epoch leave (see model.py)

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency or self.profile.concurrency

    @property
    def instance_count(self) -> int:
        """Model instances in the config: the most requests it can serve at once, whatever the control file says."""
        return max(self.instances, self.effective_concurrency, self.profile.concurrency)

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
            "cancellable": "1" if self.profile.cancellable else "0",
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
    return build_config(body)


def emulation_config(model_name: str, settings: EmulationSettings,
                     control_file: str = "") -> model_config_pb2.ModelConfig:
    """The ModelConfig of the emulated model: SD ensemble I/O, ``instance_count`` CPU instances (one per slot)."""
    parameters = settings.parameters()
    if control_file:
        parameters["control_file"] = control_file
    return sd_model_config(model_name, settings.image_size, settings.instance_count, parameters)


def write_config(repository: Path, model_name: str, settings: EmulationSettings) -> Path:
    """(Re)write ``config.pbtxt`` and ``control.json``; a running server sees a new config only after a reload."""
    (Path(repository) / model_name).mkdir(parents=True, exist_ok=True)
    control = write_control(repository, model_name, settings)
    config = emulation_config(model_name, settings, str(control.resolve()))
    return model_config.write_config(Path(repository) / model_name, config,
                                     "tritonmix EMULATED accelerator (generated; emulated: true)")


def write_control(repository: Path, model_name: str, settings: EmulationSettings) -> Path:
    """Atomically (temporary file, then rename) write the live concurrency and slow-down that model.py enforces."""
    folder = Path(repository) / model_name
    folder.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"concurrency": settings.effective_concurrency, "slow_down": settings.slow_down,
                       "park_epoch": settings.park_epoch})
    fd, tmp = tempfile.mkstemp(prefix=".control-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
        os.replace(tmp, folder / CONTROL_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / CONTROL_FILE


def read_control(path: str) -> Dict[str, Any]:
    """The live settings a control file holds; {} when it cannot be read (another machine, or gone)."""
    try:
        with open(path) as handle:
            values = json.load(handle)
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


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
