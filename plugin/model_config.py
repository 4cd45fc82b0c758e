"""``config.pbtxt`` files: one writer and one reader for every model repository tritonmix makes (the exporters',
the emulated accelerators', the scenario's real tiny SD). A config is Triton's ModelConfig protobuf
(``tritonclient.grpc.model_config_pb2``), built with ``json_format.ParseDict`` and written with ``text_format``,
never by string templates (pytriton's ``model_config/generator.py`` does the same).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

__all__ = ["build_config", "config_text", "write_config", "read_config"]

logger = logging.getLogger(__name__)


def build_config(body: Mapping[str, Any]) -> model_config_pb2.ModelConfig:
    """A ModelConfig from its JSON form (ParseDict names a bad field)."""
    return json_format.ParseDict(dict(body), model_config_pb2.ModelConfig())


def config_text(config: model_config_pb2.ModelConfig, header: str = "") -> str:
    """The canonical text form (stable across runs, so committed configs compare byte for byte), after ``header``
    written as ``#`` comment lines."""
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + text_format.MessageToString(config)


def write_config(model_dir: Path, config: model_config_pb2.ModelConfig, header: str = "") -> Path:
    """Write ``model_dir/config.pbtxt`` (the folder is made); returns its path."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(config_text(config, header))
    logger.debug("wrote %s", path)
    return path


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a ``config.pbtxt`` back into a ModelConfig message (raises ``text_format.ParseError``)."""
    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
