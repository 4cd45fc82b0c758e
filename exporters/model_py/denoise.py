"""Triton python-backend (BLS) model: the Stable Diffusion sampling loop with classifier-free guidance.

Inputs: ``input_ids`` and ``uncond_input_ids`` [B, L] (from ``tokenizer``); optional ``seed`` (INT64 [1], default
0), ``steps`` (INT32 [1], default 50) and ``guidance_scale`` (FP32 [1], default 7.5), diffusers' defaults.
Output: ``latents`` [B, 4, h, w], already divided by the VAE scaling factor (ready for ``vae_decoder``).

It calls ``text_encoder`` and ``unet`` through ``pb_utils.InferenceRequest`` (an ensemble cannot loop) and mirrors
``StableDiffusionPipeline.__call__``: latents from ``torch.randn`` with ``torch.Generator().manual_seed(seed)`` times
the scheduler's ``init_noise_sigma``; per step, [uncond, cond] latents through ``scale_model_input`` and the UNet,
``uncond + g * (cond - uncond)``, ``scheduler.step``. The scheduler (class and config) comes from
``scheduler_config.json`` in the version folder; image size and VAE factors from the config parameters.
"""
import inspect
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULTS = {"seed": 0, "steps": 50, "guidance_scale": 7.5}


def _param(config, key):
    return config["parameters"][key]["string_value"]


def _scalar(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return DEFAULTS[name] if tensor is None else tensor.as_numpy().reshape(-1)[0].item()


def _call(model, inputs, output):
    tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in inputs.items()]
    response = pb_utils.InferenceRequest(model_name=model, requested_output_names=[output], inputs=tensors).exec()
    if response.has_error():
        raise RuntimeError("%s: %s" % (model, response.error().message()))
    return pb_utils.get_output_tensor_by_name(response, output).as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        import diffusers
        import torch

        self.torch = torch
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, "scheduler_config.json")) as handle:
            scheduler_config = json.load(handle)
        self.scheduler_cls = getattr(diffusers, scheduler_config["_class_name"])
        self.scheduler_config = scheduler_config
        self.shape = [int(_param(config, k)) for k in ("LATENT_CHANNELS", "LATENT_HEIGHT", "LATENT_WIDTH")]
        self.scaling_factor = float(_param(config, "VAE_SCALING_FACTOR"))

    def _latents(self, batch, seed, scheduler):
        generator = self.torch.Generator().manual_seed(int(seed))
        latents = self.torch.randn([batch] + self.shape, generator=generator, dtype=self.torch.float32)
        return latents * scheduler.init_noise_sigma, generator

    def _step_kwargs(self, scheduler, generator):
        accepted = set(inspect.signature(scheduler.step).parameters)
        kwargs = {"generator": generator} if "generator" in accepted else {}
        if "eta" in accepted:
            kwargs["eta"] = 0.0
        return kwargs

    def _run(self, request):
        torch = self.torch
        ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
        uncond = pb_utils.get_input_tensor_by_name(request, "uncond_input_ids").as_numpy()
        seed, steps, guidance = (_scalar(request, n) for n in ("seed", "steps", "guidance_scale"))
        cfg = guidance > 1.0
        both = np.concatenate([uncond, ids]) if cfg else ids
        embeds = _call("text_encoder", {"input_ids": both.astype(np.int64)}, "last_hidden_state")
        scheduler = self.scheduler_cls.from_config(self.scheduler_config)
        scheduler.set_timesteps(int(steps))
        latents, generator = self._latents(ids.shape[0], seed, scheduler)
        kwargs = self._step_kwargs(scheduler, generator)
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
            timestep = np.full([model_input.shape[0], 1], float(t), dtype=np.float32)
            noise = torch.from_numpy(_call("unet", {"sample": model_input.numpy(), "timestep": timestep,
                                                   "encoder_hidden_states": embeds}, "noise_pred"))
            if cfg:
                noise_uncond, noise_text = noise.chunk(2)
                noise = noise_uncond + guidance * (noise_text - noise_uncond)
            latents = scheduler.step(noise, t, latents, **kwargs, return_dict=False)[0]
        return (latents / self.scaling_factor).numpy().astype(np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                latents = self._run(request)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("latents", latents)]))
            except Exception as exc:  # noqa: BLE001 - reported to the client as this request's error
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
