"""Specs and configs of the Stable Diffusion glue: ``tokenizer``, ``denoise``, ``postprocess`` and the ensemble.

The ensemble ``stable_diffusion``: ``prompt`` (TYPE_STRING [1]), ``seed`` (INT64 [1]), ``steps`` (INT32 [1]),
``guidance_scale`` (FP32 [1]) -> ``image`` (UINT8 [B, H, W, 3]). ``seed``, ``steps`` and ``guidance_scale`` are
optional, in the ensemble and in ``denoise``; left out they default to 0, 50 and 7.5 (diffusers' defaults; checked
to load and serve on Triton 2.51). Every step output is consumed (an unconsumed one stops the ensemble from loading).
"""
from __future__ import annotations

from typing import Any

from tritonclient.grpc import model_config_pb2

from .pbtxt import model_config
from .sd_parts import Part
from .specs import ModelSpec, TensorSpec

ENSEMBLE_NAME = "stable_diffusion"


def tokenizer_spec(seq_len: int) -> ModelSpec:
    return ModelSpec("tokenizer", (TensorSpec("prompt", "object", (-1,)),), (
        TensorSpec("input_ids", "int64", (-1, seq_len)), TensorSpec("uncond_input_ids", "int64", (-1, seq_len))))


def denoise_spec(parts: dict[str, Part], scaling_factor: float, optional: bool = True) -> ModelSpec:
    seq_len = parts["text_encoder"].spec.inputs[0].dims[0]
    lat_c, lat_h, lat_w = parts["unet"].spec.inputs[0].dims
    return ModelSpec("denoise", (
        TensorSpec("input_ids", "int64", (-1, seq_len)), TensorSpec("uncond_input_ids", "int64", (-1, seq_len)),
        TensorSpec("seed", "int64", (1,), optional=optional), TensorSpec("steps", "int32", (1,), optional=optional),
        TensorSpec("guidance_scale", "float32", (1,), optional=optional),
    ), (TensorSpec("latents", "float32", (-1, lat_c, lat_h, lat_w)),), 0, {
        "LATENT_CHANNELS": str(lat_c), "LATENT_HEIGHT": str(lat_h), "LATENT_WIDTH": str(lat_w),
        "VAE_SCALING_FACTOR": repr(float(scaling_factor)),
    })


def postprocess_spec(height: int, width: int) -> ModelSpec:
    return ModelSpec("postprocess", (TensorSpec("sample", "float32", (-1, 3, height, width)),),
                     (TensorSpec("image", "uint8", (-1, height, width, 3)),))


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
    return {"model_name": model, "model_version": -1, "input_map": inputs, "output_map": outputs}


def ensemble_config(parts: dict[str, Part], height: int, width: int) -> model_config_pb2.ModelConfig:
    """prompt -> tokenizer -> denoise (BLS: text_encoder, unet) -> vae_decoder -> postprocess -> image."""
    spec = ModelSpec(ENSEMBLE_NAME, (
        TensorSpec("prompt", "object", (1,)), TensorSpec("seed", "int64", (1,), optional=True),
        TensorSpec("steps", "int32", (1,), optional=True), TensorSpec("guidance_scale", "float32", (1,), optional=True),
    ), (TensorSpec("image", "uint8", (-1, height, width, 3)),))
    vae_in = parts["vae_decoder"].spec.inputs[0].name
    vae_out = parts["vae_decoder"].spec.outputs[0].name
    steps = [
        _step("tokenizer", {"prompt": "prompt"}, {"input_ids": "input_ids", "uncond_input_ids": "uncond_input_ids"}),
        _step("denoise", {"input_ids": "input_ids", "uncond_input_ids": "uncond_input_ids", "seed": "seed",
                          "steps": "steps", "guidance_scale": "guidance_scale"}, {"latents": "latents"}),
        _step("vae_decoder", {vae_in: "latents"}, {vae_out: "decoded"}),
        _step("postprocess", {"sample": "decoded"}, {"image": "image"}),
    ]
    return model_config(spec, platform="ensemble", extra={"ensemble_scheduling": {"step": steps}})
