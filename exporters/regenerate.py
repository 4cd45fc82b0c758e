"""Regenerate the committed ``config.pbtxt`` files of the tiny SD: ``python -m tritonmix.exporters.regenerate [DIR]``.

Exports ``tiny`` to every target (defaults: 64x64, no quantization) in a temporary folder and copies each
``<target>/<model>/config.pbtxt`` to ``DIR`` (default ``model_repository/tiny_sd``); weights are not copied.
"""
from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from .stable_diffusion import export_stable_diffusion
from .targets import TARGETS

logger = logging.getLogger(__name__)

DEFAULT_DIR = Path("model_repository") / "tiny_sd"


def config_files(root: Path) -> dict[str, str]:
    """``<target>/<model>/config.pbtxt`` -> text, for every config under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.glob("*/*/config.pbtxt"))}


def regenerate(dest: Path = DEFAULT_DIR) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tiny_sd"
        export_stable_diffusion("tiny", out, TARGETS)
        configs = config_files(out)
    for rel, text in configs.items():
        path = Path(dest) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    stale = set(config_files(Path(dest))) - set(configs)
    for rel in stale:
        shutil.rmtree((Path(dest) / rel).parent)
    logger.info("wrote %d configs to %s", len(configs), dest)
    return sorted(configs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO)
    args = list(sys.argv[1:] if argv is None else argv)
    regenerate(Path(args[0]) if args else DEFAULT_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
