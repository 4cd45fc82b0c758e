"""``manifest.json``: what was exported, with which versions, the parity figures and every file's sha256."""
from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from .parity import MAX_OFF_BY_ONE_FRACTION, TOLERANCES

MANIFEST_NAME = "manifest.json"
_PACKAGES = ("tritonmix", "torch", "diffusers", "transformers", "onnx", "onnxruntime", "tritonclient", "numpy")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative POSIX paths), the manifest itself excepted."""
    hashes = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        hashes[path.relative_to(root).as_posix()] = digest.hexdigest()
    return hashes


def write_manifest(root: Path, body: dict[str, Any]) -> Path:
    manifest = dict(body, versions=versions(),
                    tolerances={k: {"atol": a, "rtol": r} for k, (a, r) in TOLERANCES.items()},
                    image_max_off_by_one_fraction=MAX_OFF_BY_ONE_FRACTION, files=file_hashes(root))
    path = root / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
