"""Export a diffusers Stable Diffusion pipeline into one Triton model repository per target, plus ``manifest.json``.

Flow: load the pipeline -> export each tensor part once (ONNX; TorchScript/Neuron when ``neuron`` is a target) into a
staging folder -> parity of every part against torch (batch 1 and 2), ONNX vs TorchScript, and the ONNX loop's image
against the pipeline's -> write each target's repository -> manifest -> rename into place. Any failure leaves nothing.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from .artefacts import Artefacts, export_artefacts
from .glue import denoise_spec, ensemble_config, postprocess_spec, tokenizer_spec
from .loading import load_pipeline, parse_targets
from .manifest import write_manifest
from .parity import image_figure, ParityError
from .reference import onnx_image, pipeline_image
from .sd_parts import sd_parts
from .staging import check_output, staged_output
from .targets import TargetOptions, glue_config, part_config, template
from .writer import write_model

logger = logging.getLogger(__name__)

PARITY_PROMPT = "a photograph of an astronaut riding a horse"
PARITY_SEED, PARITY_STEPS, PARITY_GUIDANCE = 0, 3, 7.5


def export_stable_diffusion(
    model: Any, out: Union[str, Path], targets: Iterable[str] = ("python",), *, height: int = 64, width: int = 64,
    force: bool = False, quantize: Optional[str] = None, options: TargetOptions = TargetOptions(),
    progress: bool = False,
) -> dict[str, Any]:
    """Export ``model`` (a StableDiffusionPipeline, a local diffusers folder, or ``"tiny"``); return the manifest.

    Raises ``ValueError`` (unknown target, bad size), ``FileNotFoundError`` / ``NotADirectoryError`` (model
    folder), :class:`~tritonmix.exporters.staging.OutputExistsError` and :class:`ParityError`.
    """
    names = parse_targets(targets)
    if height % 8 or width % 8:
        raise ValueError("height and width must be multiples of 8, got %dx%d" % (height, width))
    check_output(Path(out).absolute(), force)  # fail before the (slow) load
    pipe = load_pipeline(model)
    parts = sd_parts(pipe, height, width)
    with staged_output(Path(out), force) as staging:
        artefacts = export_artefacts(parts, staging / ".artefacts", names, quantize, progress)
        image = _image_parity(pipe, artefacts, height, width)
        for target in names:
            _write_target(staging / target, target, pipe, parts, artefacts, options, height, width)
        artefacts.remove()
        body = {"model": str(model) if isinstance(model, (str, Path)) else type(model).__name__,
                "targets": list(names), "height": height, "width": width, "quantize": quantize,
                "parity": {"parts": [f.as_dict() for f in artefacts.figures], "image": image},
                "notices": artefacts.notices}
        manifest = json.loads(write_manifest(staging, body).read_text())
    return manifest


def _image_parity(pipe, artefacts: Artefacts, height: int, width: int) -> dict[str, Any]:
    args = (PARITY_PROMPT, PARITY_SEED, PARITY_STEPS, PARITY_GUIDANCE, height, width)
    ref = pipeline_image(pipe, *args)
    figure: dict[str, Any] = {"prompt": PARITY_PROMPT, "seed": PARITY_SEED, "steps": PARITY_STEPS,
                              "guidance_scale": PARITY_GUIDANCE,
                              "pipeline_repeat": image_figure("pipeline_same_seed", pipeline_image(pipe, *args), ref)}
    if artefacts.onnx:
        figure["onnx_loop"] = image_figure("onnx_loop_vs_pipeline", onnx_image(pipe, artefacts.onnx, *args), ref)
    for key in ("pipeline_repeat", "onnx_loop"):
        if key in figure and not figure[key]["passed"]:
            raise ParityError("image parity failed (%s): max diff %d, %d values off by one"
                              % (key, figure[key]["max_abs"], figure[key]["off_by_one"]))
    return figure


def _write_target(repo: Path, target: str, pipe, parts, artefacts: Artefacts, options: TargetOptions,
                  height: int, width: int) -> None:
    for name, part in parts.items():
        weights = artefacts.weights(target, name)
        write_model(repo, part_config(target, part.spec, options), template(target), weights)
    for name, spec in artefacts.extra_parts(target):
        write_model(repo, part_config(target, spec, options), template(target), artefacts.weights(target, name))
    tok_dir = repo / "tokenizer" / "1"
    write_model(repo, glue_config(tokenizer_spec(pipe.tokenizer.model_max_length)), "tokenizer.py")
    pipe.tokenizer.save_pretrained(str(tok_dir))
    write_model(repo, glue_config(denoise_spec(parts, pipe.vae.config.scaling_factor)), "denoise.py")
    pipe.scheduler.save_config(str(repo / "denoise" / "1"))
    write_model(repo, glue_config(postprocess_spec(height, width)), "postprocess.py")
    write_model(repo, ensemble_config(parts, height, width))
    logger.info("wrote %s repository %s", target, repo)
