"""``export_module``: any torch module -> one Triton model per target (no ensemble), with parity figures.

Inputs are named ``input__0..``, outputs ``output__0..``; with ``dynamic_batch`` the first dimension of every example
is the batch (dynamic in ONNX, ``max_batch_size`` 8 in the config) and figures are taken at batch 1 and 2.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch

from .loading import parse_targets
from .manifest import write_manifest
from .parity import BATCH_SIZES, Figure, onnx_runner, part_figures, raise_on_failure, torchscript_runner
from .serialize import export_neuron, export_onnx
from .staging import staged_output
from .targets import TargetOptions, part_config, template
from .writer import write_model

logger = logging.getLogger(__name__)


def _outputs(module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        result = module(*inputs)
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _resize(example: Sequence[torch.Tensor], dynamic_batch: bool):
    def make(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        if not dynamic_batch:
            return tuple(example)
        out = []
        for t in example:
            shape = (batch,) + tuple(t.shape[1:])
            out.append(torch.randn(shape, generator=generator, dtype=t.dtype) if t.is_floating_point()
                       else t[:1].expand(shape).clone())
        return tuple(out)
    return make


def export_module(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor, name: str,
                  out: Union[str, Path], targets: Iterable[str] = ("python",), dynamic_batch: bool = True, *,
                  force: bool = False, options: TargetOptions = TargetOptions()) -> dict:
    """Write ``out/<target>/<name>/`` for each target and ``out/manifest.json``; return the manifest."""
    from .targets import spec_for_module

    names = parse_targets(targets)
    module = module.eval()
    example = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    outputs = _outputs(module, example)
    spec = spec_for_module(name, tuple(t.numpy() for t in example), tuple(t.numpy() for t in outputs), dynamic_batch)
    in_names, out_names = [t.name for t in spec.inputs], [t.name for t in spec.outputs]
    axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic_batch else {}
    make = _resize(example, dynamic_batch)
    figures: list[Figure] = []
    with staged_output(Path(out), force) as staging:
        work = staging / ".artefacts"
        onnx = export_onnx(module, example, in_names, out_names, axes, work / "onnx")
        figures += part_figures(name + ":onnx", _First(module), onnx_runner(str(onnx), in_names), make)
        ts = None
        if "neuron" in names:
            export_neuron(module, example, work / "model.pt")
            ts = work / "model.pt"
            figures += part_figures(name + ":torchscript", _First(module), torchscript_runner(str(ts)), make)
        raise_on_failure(figures)
        for target in names:
            files = {"model.pt": ts} if target == "neuron" else {"model.onnx": onnx}
            write_model(staging / target, part_config(target, spec, options), template(target), files)
        import shutil

        shutil.rmtree(work)
        body = {"model": name, "targets": list(names), "batch_sizes": list(BATCH_SIZES),
                "parity": {"parts": [f.as_dict() for f in figures]}}
        return json.loads(write_manifest(staging, body).read_text())


class _First(torch.nn.Module):
    """The module's first output (parity compares one tensor per part)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        result = self.module(*inputs)
        return result[0] if isinstance(result, (tuple, list)) else result
