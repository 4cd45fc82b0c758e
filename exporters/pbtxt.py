"""``config.pbtxt`` generation for exported models: the ModelConfig of a ``ModelSpec``; written and read by
``tritonmix.model_config`` (the one writer of every repository tritonmix makes).
"""
from __future__ import annotations

from typing import Any, Optional

from tritonclient.grpc import model_config_pb2

from ..model_config import build_config, config_text, read_config, write_config
from .specs import ModelSpec, TensorSpec

__all__ = ["model_config", "config_text", "write_config", "read_config"]


def _tensor(spec: TensorSpec, is_input: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": spec.name, "data_type": spec.triton_dtype, "dims": list(spec.dims)}
    if spec.reshape is not None:
        entry["reshape"] = {"shape": list(spec.reshape)}
    if is_input and spec.optional:
        entry["optional"] = True
    return entry


def model_config(
    spec: ModelSpec,
    *,
    backend: Optional[str] = None,
    platform: Optional[str] = None,
    instance_group: Optional[list[dict[str, Any]]] = None,
    dynamic_batching: bool = False,
    extra: Optional[dict[str, Any]] = None,
) -> model_config_pb2.ModelConfig:
    """Build the ModelConfig message for ``spec``; ``extra`` is merged in as ModelConfig JSON fields."""
    body: dict[str, Any] = {
        "name": spec.name,
        "max_batch_size": spec.max_batch_size,
        "input": [_tensor(t, True) for t in spec.inputs],
        "output": [_tensor(t, False) for t in spec.outputs],
    }
    if backend:
        body["backend"] = backend
    if platform:
        body["platform"] = platform
    if instance_group:
        body["instance_group"] = instance_group
    if dynamic_batching and spec.max_batch_size > 0:
        body["dynamic_batching"] = {}
    if spec.parameters:
        body["parameters"] = {k: {"string_value": v} for k, v in sorted(spec.parameters.items())}
    body.update(extra or {})
    return build_config(body)
