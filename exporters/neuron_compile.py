"""Compile a ``neuron`` repository's CPU TorchScript parts with ``torch_neuronx.trace``, in place, on a Neuron host.

Every model whose ``1/`` holds the ``COMPILED_MODEL`` file (``model.pt``) is loaded, traced by torch-neuronx with
example inputs made from its config (batch 2, the batch it was exported with; a ``reshape`` applies per batch
element) and written back atomically (temporary file, then rename).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .pbtxt import read_config
from .serialize import neuron_available

logger = logging.getLogger(__name__)

EXPORT_BATCH = 2
_DTYPES = {"TYPE_FP32": torch.float32, "TYPE_FP16": torch.float16, "TYPE_INT64": torch.int64,
           "TYPE_INT32": torch.int32}


class NeuronUnavailableError(RuntimeError):
    """torch-neuronx is not importable (not an Inferentia/Trainium host)."""


def _example(config) -> tuple[torch.Tensor, ...]:
    from tritonclient.grpc import model_config_pb2

    tensors = []
    for entry in config.input:
        dims = list(entry.reshape.shape) if entry.HasField("reshape") else list(entry.dims)
        shape = ([EXPORT_BATCH] if config.max_batch_size > 0 else []) + [max(int(d), 1) for d in dims]
        dtype = _DTYPES[model_config_pb2.DataType.Name(entry.data_type)]
        tensors.append(torch.zeros(shape, dtype=dtype) if not dtype.is_floating_point else torch.randn(shape, dtype=dtype))
    return tuple(tensors)


def compile_repository(repo: Path) -> list[str]:
    """Compile every TorchScript part under ``repo``; return the names compiled."""
    repo = Path(repo)
    if not repo.is_dir():
        raise FileNotFoundError("neuron repository %s does not exist" % repo)
    if not neuron_available():
        raise NeuronUnavailableError("torch-neuronx is not importable here; run neuron-compile on an "
                                     "Inferentia/Trainium host with the AWS Neuron SDK")
    import torch_neuronx

    done = []
    for config_path in sorted(repo.glob("*/config.pbtxt")):
        config = read_config(config_path)
        params = {k: v.string_value for k, v in config.parameters.items()}
        weights = config_path.parent / "1" / params.get("COMPILED_MODEL", "model.pt")
        if "COMPILED_MODEL" not in params or not weights.is_file():
            continue
        compiled = torch_neuronx.trace(torch.jit.load(str(weights)), _example(config))
        tmp = weights.with_suffix(".tmp")
        torch.jit.save(compiled, str(tmp))
        os.replace(tmp, weights)
        logger.info("compiled %s for Neuron", config.name)
        done.append(config.name)
    return done
