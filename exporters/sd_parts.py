"""The Stable Diffusion parts that become models: torch wrappers with plain tensor signatures, and their specs.

Every part batches (``max_batch_size`` > 0): ``text_encoder`` takes ``input_ids`` [B, L], ``unet`` takes
``sample`` [B, 4, h, w], ``timestep`` [B] (sent as [B, 1], reshaped by Triton) and ``encoder_hidden_states``
[B, L, D]; ``vae_decoder`` takes ``latent_sample`` [B, 4, h, w] already divided by the VAE scaling factor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .specs import ModelSpec, TensorSpec

MAX_BATCH_SIZE = 8


class TextEncoderPart(torch.nn.Module):
    def __init__(self, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, return_dict=False)[0]


class UNetPart(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class VaeDecoderPart(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=False)[0]


@dataclass(frozen=True)
class Part:
    """A torch part with its model spec, ONNX dynamic axes and an example-input maker for a batch size."""

    spec: ModelSpec
    module: torch.nn.Module
    dynamic_axes: dict[str, dict[int, str]]

    def example_inputs(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        return tuple(_random(t, batch, generator) for t in self.spec.inputs)


def _random(spec: TensorSpec, batch: int, generator: torch.Generator) -> torch.Tensor:
    shape = (batch,) + tuple(spec.reshape if spec.reshape is not None else spec.dims)
    if spec.dtype == "int64":
        return torch.randint(0, 500, shape, generator=generator, dtype=torch.int64)
    if spec.name == "timestep":
        return torch.randint(1, 1000, shape, generator=generator).to(torch.float32)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def sd_parts(pipe, height: int = 64, width: int = 64) -> dict[str, Part]:  # pipe: StableDiffusionPipeline
    """The three tensor parts of ``pipe`` for images of ``height`` x ``width`` (latents 1/8 of that)."""
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    lat_c, lat_h, lat_w = pipe.unet.config.in_channels, height // scale, width // scale
    seq_len, hidden = pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size
    image = {0: "batch", 2: "height", 3: "width"}
    te = ModelSpec("text_encoder", (TensorSpec("input_ids", "int64", (seq_len,)),),
                   (TensorSpec("last_hidden_state", "float32", (seq_len, hidden)),), MAX_BATCH_SIZE)
    unet = ModelSpec("unet", (
        TensorSpec("sample", "float32", (lat_c, lat_h, lat_w)),
        TensorSpec("timestep", "float32", (1,), reshape=()),
        TensorSpec("encoder_hidden_states", "float32", (seq_len, hidden)),
    ), (TensorSpec("noise_pred", "float32", (lat_c, lat_h, lat_w)),), MAX_BATCH_SIZE)
    vae = ModelSpec("vae_decoder", (TensorSpec("latent_sample", "float32", (lat_c, lat_h, lat_w)),),
                    (TensorSpec("sample", "float32", (3, height, width)),), MAX_BATCH_SIZE)
    return {
        "text_encoder": Part(te, TextEncoderPart(pipe.text_encoder).eval(),
                             {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}}),
        "unet": Part(unet, UNetPart(pipe.unet).eval(), {
            "sample": image, "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch"}, "noise_pred": image}),
        "vae_decoder": Part(vae, VaeDecoderPart(pipe.vae).eval(), {"latent_sample": image, "sample": image}),
    }
