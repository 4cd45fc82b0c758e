"""Reference images: the diffusers pipeline's own, and the same loop on the exported ONNX parts (no server).

The ONNX loop is the ``denoise`` model's loop (``model_py/denoise.py``) with onnxruntime sessions in place of the
BLS calls, so its image tells whether the exported parts reproduce the pipeline before anything is served.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def pipeline_image(pipe, prompt: str, seed: int, steps: int, guidance_scale: float, height: int,
                   width: int) -> np.ndarray:
    """uint8 [1, H, W, 3], exactly as ``numpy_to_pil`` would round it."""
    result = pipe(prompt, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance_scale,
                  generator=torch.Generator().manual_seed(seed), output_type="np")
    return (result.images * 255).round().astype(np.uint8)


def onnx_image(pipe, onnx_files: dict[str, Path], prompt: str, seed: int, steps: int, guidance_scale: float,
               height: int, width: int) -> np.ndarray:
    import onnxruntime as ort

    run = {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for name, path in onnx_files.items()}
    tok = pipe.tokenizer
    ids = [tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="np")
           .input_ids.astype(np.int64) for p in ("", prompt)]
    cfg = guidance_scale > 1.0
    both = np.concatenate(ids) if cfg else ids[1]
    embeds = run["text_encoder"].run(None, {"input_ids": both})[0]
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    shape = [1, pipe.unet.config.in_channels, height // scale, width // scale]
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
        noise = torch.from_numpy(run["unet"].run(None, {
            "sample": model_input.numpy(), "timestep": np.full([model_input.shape[0]], float(t), np.float32),
            "encoder_hidden_states": embeds})[0])
        if cfg:
            uncond, text = noise.chunk(2)
            noise = uncond + guidance_scale * (text - uncond)
        latents = scheduler.step(noise, t, latents, return_dict=False)[0]
    latents = (latents / pipe.vae.config.scaling_factor).numpy()
    sample = run["vae_decoder"].run(None, {"latent_sample": latents})[0]
    image = np.clip(sample / np.float32(2) + np.float32(0.5), 0, 1).transpose(0, 2, 3, 1)
    return (image * 255).round().astype(np.uint8)
