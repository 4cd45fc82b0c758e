"""Write a torch module as ONNX (for onnxruntime, in Triton's layout) or as TorchScript (the Neuron loading path).

ONNX: the TorchScript-based exporter (``dynamo=False``, opset 17): on these parts it matches torch to ~1e-6 and is
several times faster than the dynamo exporter. A model whose weights pass ``EXTERNAL_DATA_THRESHOLD_BYTES`` (real SD
UNets pass 2 GB) is written the way Triton's onnxruntime backend expects: a directory ``1/model.onnx/`` holding
``model.onnx`` and its external data files.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import torch

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    version_dir: Path,
    threshold_bytes: int = EXTERNAL_DATA_THRESHOLD_BYTES,
) -> Path:
    """Export to ``version_dir/model.onnx`` (a file, or a directory with external data); return the ONNX file."""
    version_dir.mkdir(parents=True, exist_ok=True)
    large = _param_bytes(module) >= threshold_bytes
    target = version_dir / "model.onnx" / "model.onnx" if large else version_dir / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, example_inputs, str(target), input_names=list(input_names), output_names=list(output_names),
            dynamic_axes=dynamic_axes, opset_version=ONNX_OPSET, dynamo=False,
        )
    if large:
        _to_external_data(target)
    logger.info("exported ONNX %s", target)
    return target


def _to_external_data(path: Path) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)


def export_torchscript(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    """Trace on CPU and save (``torch.jit.load``-able, the same path a torch-neuronx compiled module takes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example_inputs, check_trace=False, strict=False)
    traced.save(str(path))
    logger.info("wrote TorchScript %s", path)
    return path


def neuron_available() -> bool:
    """True where the real torch-neuronx is importable (the PyPI placeholder raises ImportError)."""
    try:
        import torch_neuronx  # noqa: F401
    except Exception:  # noqa: BLE001 - the placeholder may raise anything on import
        return False
    return True


def export_neuron(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path) -> str:
    """Compile with ``torch_neuronx.trace`` where available, else CPU TorchScript; return which ("neuron"/"cpu")."""
    if not neuron_available():
        export_torchscript(module, example_inputs, path)
        return "torchscript-cpu"
    import torch_neuronx

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch_neuronx.trace(module, example_inputs), str(path))
    logger.info("compiled %s with torch_neuronx", path)
    return "neuron"
