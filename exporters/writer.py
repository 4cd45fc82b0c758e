"""Lay out one target's Triton model repository from exported artefacts.

``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/1/`` (weights, ``model.py`` for python-backend models, and the
files a model reads: tokenizer files, ``scheduler_config.json``). Ensembles get an empty ``1/``.
"""
from __future__ import annotations

import logging
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Optional

from tritonclient.grpc import model_config_pb2

from .pbtxt import write_config

logger = logging.getLogger(__name__)


def model_py(name: str) -> str:
    """The text of ``exporters/model_py/<name>``."""
    return resources.files("tritonmix.exporters.model_py").joinpath(name).read_text()


def link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link (same file system, no copy of GBs of weights) or copy; directories recursively."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, copy_function=_link_or_copy_file)
    else:
        _link_or_copy_file(str(source), str(dest))


def _link_or_copy_file(source: str, dest: str) -> str:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)
    return dest


def write_model(repo: Path, config: model_config_pb2.ModelConfig, template: Optional[str] = None,
                files: Optional[dict[str, Path]] = None) -> Path:
    """Write one model: its config, ``1/model.py`` from ``template``, and ``files`` (name in ``1/`` -> source)."""
    model_dir = repo / config.name
    write_config(model_dir, config)
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    if template:
        (version_dir / "model.py").write_text(model_py(template))
    for name, source in (files or {}).items():
        link_or_copy(source, version_dir / name)
    logger.debug("wrote model %s", model_dir)
    return model_dir
