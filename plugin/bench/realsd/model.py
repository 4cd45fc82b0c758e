"""REAL tiny Stable Diffusion: a Triton python-backend model running the pipeline with torch on CPU or CUDA.

Copied, unchanged, into a generated repository as ``<model>/1/model.py`` by ``tritonmix.bench.realsd``, with a copy
of ``tritonmix/exporters/tiny.py`` beside it as ``tiny_sd.py`` (used when tritonmix itself is not importable in the
stub). It serves the Stable Diffusion ensemble's I/O: ``prompt`` TYPE_STRING [1]; optional ``seed`` INT64,
``steps`` INT32, ``guidance_scale`` FP32; output ``image`` UINT8 [1, S, S, 3].

Settings come from the config's ``parameters`` (strings): ``device`` (``cuda`` | ``cpu``), ``steps`` (denoising steps
when a request sends none), ``guidance_scale``, ``image_size`` (pixels, a multiple of 8), ``threads`` (torch
intra-op threads per instance on CPU), ``weights_seed``. Every instance builds the same random-weight pipeline
(same seed, same weights) and runs one warm-up image before it reports ready, so first requests pay no CUDA start.
"""
import json
import os
import sys
import time

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

_DEFAULTS = {"device": "cpu", "steps": "10", "guidance_scale": "7.5", "image_size": "64", "threads": "0",
             "weights_seed": "0"}


def _parameters(model_config):
    values = dict(_DEFAULTS)
    for key, value in model_config.get("parameters", {}).items():
        values[key] = value.get("string_value", "")
    return values


def _builder():
    try:
        from tritonmix.exporters.tiny import tiny_stable_diffusion
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from tiny_sd import tiny_stable_diffusion  # type: ignore[import-not-found]
    return tiny_stable_diffusion


class TritonPythonModel:
    """One instance: one pipeline on the configured device, one request at a time."""

    def initialize(self, args):
        import torch

        config = json.loads(args["model_config"])
        params = _parameters(config)
        self.torch = torch
        self.model_name = config.get("name", "stable_diffusion")
        self.steps = int(params["steps"])
        self.guidance_scale = float(params["guidance_scale"])
        self.size = int(params["image_size"])
        device = params["device"]
        if device == "cuda" and not torch.cuda.is_available():
            raise pb_utils.TritonModelException("device=cuda asked but torch.cuda.is_available() is False")
        self.device = torch.device(device)
        threads = int(params["threads"])
        if threads > 0:
            torch.set_num_threads(threads)
        started = time.monotonic()
        self.pipe = _builder()(seed=int(params["weights_seed"])).to(self.device)
        self._run("warm-up", 0, self.steps, self.guidance_scale)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        pb_utils.Logger.log_info(
            f"tritonmix REAL tiny SD: model={self.model_name} device={self.device} "
            f"({torch.cuda.get_device_name(0) if self.device.type == 'cuda' else 'cpu'}) steps={self.steps} "
            f"size={self.size} threads={torch.get_num_threads()} ready in {time.monotonic() - started:.1f} s"
        )

    def _run(self, prompt, seed, steps, guidance_scale):
        generator = self.torch.Generator(device=self.device).manual_seed(int(seed))
        with self.torch.inference_mode():
            out = self.pipe(prompt, num_inference_steps=int(steps), guidance_scale=float(guidance_scale),
                            height=self.size, width=self.size, generator=generator, output_type="np")
        images = np.asarray(out.images, dtype=np.float32)
        return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)

    @staticmethod
    def _scalar(request, name, default):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return default if tensor is None else tensor.as_numpy().reshape(-1)[0].item()

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                prompt = pb_utils.get_input_tensor_by_name(request, "prompt").as_numpy().reshape(-1)[0]
                prompt = prompt.decode() if isinstance(prompt, bytes) else str(prompt)
                image = self._run(prompt, self._scalar(request, "seed", 0), self._scalar(request, "steps", self.steps),
                                  self._scalar(request, "guidance_scale", self.guidance_scale))
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("image", image)]))
            except Exception as exc:  # noqa: BLE001 - one bad request answers with an error, the model stays up
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tiny SD failed: {exc}")))
        return responses

    def finalize(self):
        pb_utils.Logger.log_info(f"tritonmix REAL tiny SD {self.model_name} on {self.device}: instance stopped")
