"""Plain descriptions of a model's tensors, shared by the ONNX export, the config generator and the parity checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

#: numpy dtype name -> Triton data type (ModelConfig enum name).
TRITON_DTYPES: dict[str, str] = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL", "object": "TYPE_STRING", "bytes": "TYPE_STRING",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``dims`` exclude the batch dimension when the model batches; -1 means variable.

    ``reshape`` is Triton's ``reshape`` (the shape the model itself sees, per batch element); ``optional`` marks an
    input that may be left out (its default is documented by the model that reads it).
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    reshape: Optional[tuple[int, ...]] = None
    optional: bool = False

    @property
    def triton_dtype(self) -> str:
        return TRITON_DTYPES[self.dtype]


@dataclass(frozen=True)
class ModelSpec:
    """A model's interface: its tensors and whether the first dimension is a batch Triton may form."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    parameters: dict[str, str] = field(default_factory=dict)
