"""Load the model to export and check the requested targets; errors name what was wrong in one line."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from .targets import TARGETS
from .tiny import tiny_stable_diffusion

logger = logging.getLogger(__name__)


class NotAPipelineError(ValueError):
    """A folder that is not a diffusers pipeline (no ``model_index.json``, or it failed to load)."""


def parse_targets(targets: Iterable[str] | str) -> tuple[str, ...]:
    """``"python,cpu"`` or an iterable -> validated, de-duplicated names in the given order."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    names = tuple(dict.fromkeys(t.strip() for t in items if t.strip()))
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        raise ValueError("unknown target %r (choose from %s)" % (unknown[0], ", ".join(TARGETS)))
    if not names:
        raise ValueError("no targets given (choose from %s)" % ", ".join(TARGETS))
    return names


def load_pipeline(model: Any):  # -> StableDiffusionPipeline
    """A pipeline object as is; ``"tiny"`` -> :func:`tiny_stable_diffusion`; a path -> ``from_pretrained`` offline."""
    if not isinstance(model, (str, Path)):
        return model
    if str(model) == "tiny":
        return tiny_stable_diffusion(seed=0)
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError("model folder %s does not exist" % path)
    if not path.is_dir():
        raise NotADirectoryError("model %s is not a folder" % path)
    if not (path / "model_index.json").is_file():
        raise NotAPipelineError("%s is not a diffusers pipeline (no model_index.json)" % path)
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, safety_checker=None,
                                                       requires_safety_checker=False)
    except Exception as exc:  # noqa: BLE001 - any load failure means "not a usable pipeline"
        raise NotAPipelineError("%s is not a loadable Stable Diffusion pipeline: %s"
                                % (path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe
