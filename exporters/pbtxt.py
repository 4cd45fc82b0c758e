"""``config.pbtxt`` generation: Triton's ModelConfig protobuf (``tritonclient.grpc.model_config_pb2``), filled with
``json_format.ParseDict`` and written with ``text_format``; never by string templates (pytriton's
``model_config/generator.py`` does the same).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from .specs import ModelSpec, TensorSpec

logger = logging.getLogger(__name__)


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
    return json_format.ParseDict(body, model_config_pb2.ModelConfig())


def config_text(config: model_config_pb2.ModelConfig) -> str:
    """The canonical text form (stable across runs, so committed configs can be compared byte for byte)."""
    return text_format.MessageToString(config)


def write_config(model_dir: Path, config: model_config_pb2.ModelConfig) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(config_text(config))
    logger.debug("wrote %s", path)
    return path


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a ``config.pbtxt`` back into a ModelConfig message (raises ``text_format.ParseError``)."""
    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
