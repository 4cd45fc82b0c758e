"""What each target's repository holds: the config of every model, and which weight format it loads.

| target | tensor parts (text_encoder, unet, vae_decoder) | glue (tokenizer, denoise, postprocess) |
|---|---|---|
| python | python backend, ``onnx_model.py`` runs ``model.onnx`` with onnxruntime in-process | python backend |
| cpu | ``platform: onnxruntime_onnx``, KIND_CPU, dynamic batching, optional OpenVINO accelerator | python, KIND_CPU |
| gpu | ``onnxruntime_onnx``, KIND_GPU, TensorRT accelerator (FP16), warmup | python, KIND_CPU |
| neuron | python backend, ``torchscript_model.py`` loads ``model.pt``; KIND_MODEL, NeuronCore range | python, KIND_CPU |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from tritonclient.grpc import model_config_pb2

from .pbtxt import model_config
from .specs import ModelSpec, TensorSpec

TARGETS: tuple[str, ...] = ("python", "cpu", "gpu", "neuron")


@dataclass(frozen=True)
class TargetOptions:
    """Per-export choices: OpenVINO on cpu, NeuronCores per neuron instance, instances per model."""

    cpu_openvino: bool = False
    neuron_cores_per_instance: int = 1
    neuron_instances: int = 1


def weight_file(target: str) -> Optional[str]:
    """The file a tensor part loads in ``1/``: ``model.onnx``, ``model.pt``."""
    return "model.pt" if target == "neuron" else "model.onnx"


def template(target: str) -> Optional[str]:
    """The ``model_py`` file a tensor part uses on ``target``, or None when Triton's own backend runs it."""
    return {"python": "onnx_model.py", "neuron": "torchscript_model.py"}.get(target)


def _warmup(spec: ModelSpec) -> list[dict[str, Any]]:
    inputs = {}
    for t in spec.inputs:
        dims = [1] + list(t.dims) if spec.max_batch_size > 0 else list(t.dims)
        kind = {"random_data": True} if t.dtype.startswith("float") else {"zero_data": True}
        inputs[t.name] = {"data_type": t.triton_dtype, "dims": dims, **kind}
    return [{"name": "%s_warmup" % spec.name, "batch_size": 1, "inputs": inputs}]


def part_config(target: str, spec: ModelSpec, options: TargetOptions) -> model_config_pb2.ModelConfig:
    """The config of a tensor part (text_encoder, unet, vae_decoder, or a module from ``export_module``)."""
    if target == "python":
        return model_config(spec, backend="python", instance_group=[{"kind": "KIND_CPU", "count": 1}],
                            dynamic_batching=True)
    if target == "cpu":
        extra: dict[str, Any] = {}
        if options.cpu_openvino:
            extra["optimization"] = {"execution_accelerators": {"cpu_execution_accelerator": [{"name": "openvino"}]}}
        return model_config(spec, platform="onnxruntime_onnx", instance_group=[{"kind": "KIND_CPU", "count": 1}],
                            dynamic_batching=True, extra=extra)
    if target == "gpu":
        trt = {"name": "tensorrt", "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"}}
        extra = {"optimization": {"execution_accelerators": {"gpu_execution_accelerator": [trt]}},
                 "model_warmup": _warmup(spec)}
        return model_config(spec, platform="onnxruntime_onnx", instance_group=[{"kind": "KIND_GPU", "count": 1}],
                            dynamic_batching=True, extra=extra)
    if target == "neuron":
        params = dict(spec.parameters, COMPILED_MODEL="model.pt", NEURON_CORE_START="0",
                      NEURON_CORES_PER_INSTANCE=str(options.neuron_cores_per_instance))
        neuron_spec = ModelSpec(spec.name, spec.inputs, spec.outputs, spec.max_batch_size, params)
        return model_config(neuron_spec, backend="python",
                            instance_group=[{"kind": "KIND_MODEL", "count": options.neuron_instances}])
    raise ValueError("unknown target %r" % target)


def glue_config(spec: ModelSpec) -> model_config_pb2.ModelConfig:
    """Python-backend glue (tokenizer, denoise, postprocess): the same on every target, on the CPU."""
    return model_config(spec, backend="python", instance_group=[{"kind": "KIND_CPU", "count": 1}])


def spec_for_module(name: str, inputs: tuple[np.ndarray, ...], outputs: tuple[np.ndarray, ...],
                    batching: bool) -> ModelSpec:
    """A spec for ``export_module``: ``input__i`` / ``output__i``, dims from the examples (batch dim dropped)."""
    def tensor(prefix: str, i: int, array: np.ndarray) -> TensorSpec:
        dims = tuple(array.shape[1:] if batching else array.shape)
        return TensorSpec("%s__%d" % (prefix, i), str(array.dtype), dims or (1,), reshape=() if not dims else None)

    return ModelSpec(name, tuple(tensor("input", i, a) for i, a in enumerate(inputs)),
                     tuple(tensor("output", i, a) for i, a in enumerate(outputs)), 8 if batching else 0)
