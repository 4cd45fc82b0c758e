"""Export every tensor part once (ONNX and/or TorchScript) and check each against torch.

Parts are exported with batch-2 example inputs; figures are taken at batch 1 and 2 on fresh random inputs.
``quantize="int8"`` adds ``unet_int8`` (onnxruntime dynamic quantization) to the ``cpu`` target, with its figure.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from .parity import Figure, onnx_runner, part_figures, raise_on_failure, torchscript_runner
from .sd_parts import Part
from .serialize import export_neuron, export_onnx
from .specs import ModelSpec

logger = logging.getLogger(__name__)


@dataclass
class Artefacts:
    root: Path
    onnx: dict[str, Path] = field(default_factory=dict)
    torchscript: dict[str, Path] = field(default_factory=dict)
    extra: dict[str, tuple[ModelSpec, Path]] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def weights(self, target: str, name: str) -> dict[str, Path]:
        """Files for ``<name>/1/`` on ``target`` (``model.onnx`` as a file, or its external-data directory)."""
        if name in self.extra:
            return {"model.onnx": self.extra[name][1]}
        if target == "neuron":
            return {"model.pt": self.torchscript[name]}
        onnx_file = self.onnx[name]
        return {"model.onnx": onnx_file.parent if onnx_file.parent.name == "model.onnx" else onnx_file}

    def extra_parts(self, target: str) -> Iterator[tuple[str, ModelSpec]]:
        if target == "cpu":
            for name, (spec, _) in self.extra.items():
                yield name, spec

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _progress(items: Sequence[str], enabled: bool, label: str):
    from tqdm import tqdm

    return tqdm(items, desc=label, disable=not enabled, unit="part")


def export_artefacts(parts: dict[str, Part], root: Path, targets: Sequence[str], quantize: Optional[str],
                     progress: bool = False) -> Artefacts:
    artefacts = Artefacts(root)
    want_onnx = any(t in ("python", "cpu", "gpu") for t in targets)
    for name in _progress(list(parts), progress, "export"):
        part = parts[name]
        example = part.example_inputs(2, torch.Generator().manual_seed(0))
        names = [t.name for t in part.spec.inputs]
        if want_onnx:
            path = export_onnx(part.module, example, names, [t.name for t in part.spec.outputs], part.dynamic_axes,
                               root / "onnx" / name)
            artefacts.onnx[name] = path
            artefacts.figures += part_figures(name + ":onnx", part.module, onnx_runner(str(path), names),
                                              part.example_inputs)
        if "neuron" in targets:
            _export_ts(artefacts, name, part, example)
    if quantize:
        _quantize(artefacts, parts, quantize)
    raise_on_failure(artefacts.figures)
    return artefacts


def _export_ts(artefacts: Artefacts, name: str, part: Part, example: tuple[torch.Tensor, ...]) -> None:
    path = artefacts.root / "torchscript" / name / "model.pt"
    kind = export_neuron(part.module, example, path)
    artefacts.torchscript[name] = path
    if kind != "neuron" and not any("torch-neuronx" in n for n in artefacts.notices):
        notice = ("torch-neuronx is not importable here: the neuron target holds CPU-traced TorchScript; run "
                  "`tritonmix export neuron-compile DIR/neuron` on an Inferentia/Trainium host to compile it")
        logger.warning(notice)
        artefacts.notices.append(notice)
    artefacts.figures += part_figures(name + ":torchscript", part.module, torchscript_runner(str(path)),
                                      part.example_inputs)
    if name in artefacts.onnx:
        onnx = onnx_runner(str(artefacts.onnx[name]), [t.name for t in part.spec.inputs])
        artefacts.figures += part_figures(name + ":onnx_vs_torchscript", _RunnerModule(onnx), 
                                          torchscript_runner(str(path)), part.example_inputs)


class _RunnerModule(torch.nn.Module):
    """Wrap a numpy runner so it can be the reference of :func:`part_figures` (ONNX vs TorchScript)."""

    def __init__(self, runner) -> None:
        super().__init__()
        self.runner = runner

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner([t.numpy() for t in inputs]))


def _quantize(artefacts: Artefacts, parts: dict[str, Part], quantize: str) -> None:
    if quantize != "int8":
        raise ValueError("unknown quantization %r (only int8)" % quantize)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    part = parts["unet"]
    source = artefacts.onnx["unet"]
    dest = artefacts.root / "onnx" / "unet_int8" / "model.onnx"
    dest.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8)
    spec = ModelSpec("unet_int8", part.spec.inputs, part.spec.outputs, part.spec.max_batch_size)
    artefacts.extra["unet_int8"] = (spec, dest)
    names = [t.name for t in part.spec.inputs]
    artefacts.figures += part_figures("unet_int8:onnx", part.module, onnx_runner(str(dest), names),
                                      part.example_inputs, dtype="int8")
