"""torch / diffusers -> Triton model repositories per accelerator (python, cpu, gpu, neuron), with parity checks.

Errors::

    ValueError                       unknown target, bad size, unknown quantization
    ├── NotAPipelineError            a folder that is not a diffusers pipeline
    FileNotFoundError / NotADirectoryError   the model folder is missing / not a folder
    FileExistsError
    └── OutputExistsError            the output folder exists and force was not given
    RuntimeError
    └── ParityError                  an exported part or image differs beyond its tolerance
"""
from __future__ import annotations

from .loading import NotAPipelineError
from .module import export_module
from .parity import ParityError
from .stable_diffusion import export_stable_diffusion
from .staging import OutputExistsError
from .targets import TARGETS, TargetOptions
from .tiny import tiny_stable_diffusion

__all__ = [
    "NotAPipelineError",
    "OutputExistsError",
    "ParityError",
    "TARGETS",
    "TargetOptions",
    "export_module",
    "export_stable_diffusion",
    "tiny_stable_diffusion",
]
