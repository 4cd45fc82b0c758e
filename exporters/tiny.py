"""A tiny random-weight Stable Diffusion pipeline built from configs in code (no hub, no download).

Sizes follow ENVIRONMENT.md: CLIP text encoder hidden 32 / 2 layers, UNet2DConditionModel block_out_channels
(32, 64), AutoencoderKL (32, 64), EulerDiscreteScheduler. The tokenizer is a byte-level CLIP BPE vocabulary that
this module writes itself (256 byte symbols, their end-of-word forms, start/end tokens; no merges).
"""
from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

TINY_MAX_LENGTH = 77
TINY_VOCAB_SIZE = 1000


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode mapping (transformers 5 no longer exports it from its CLIP module)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def tiny_clip_tokenizer(max_length: int = TINY_MAX_LENGTH):  # -> CLIPTokenizer
    """A byte-level CLIPTokenizer whose vocabulary fits :data:`TINY_VOCAB_SIZE`."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length, pad_token="<|endoftext|>")


def _text_encoder():  # -> CLIPTextModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=TINY_VOCAB_SIZE, max_position_embeddings=TINY_MAX_LENGTH, bos_token_id=512, eos_token_id=513,
        pad_token_id=513, projection_dim=32,
    )
    return CLIPTextModel(config)


def _unet():  # -> UNet2DConditionModel
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )


def _vae():  # -> AutoencoderKL
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=32, sample_size=64,
    )


def tiny_stable_diffusion(seed: int = 0):  # -> diffusers.StableDiffusionPipeline
    """Build a random-weight :class:`diffusers.StableDiffusionPipeline`; the same ``seed`` gives the same weights."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    text_encoder, unet, vae = _text_encoder(), _unet(), _vae()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, timestep_spacing="leading",
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tiny_clip_tokenizer(), unet=unet.eval(),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    logger.info("built tiny Stable Diffusion pipeline (seed=%d)", seed)
    return pipe
