"""EMULATED accelerator: a Triton python-backend model that reproduces a hardware service profile.

This file is copied, unchanged, into a generated model repository as ``<model>/1/model.py`` (see
``tritonmix.emulation.repository``); it runs inside Triton's python backend stub and imports nothing of tritonmix.

It serves the same I/O as the real Stable Diffusion ensemble (``prompt`` TYPE_STRING [1]; optional ``seed`` INT64,
``steps`` INT32, ``guidance_scale`` FP32; output ``image`` UINT8 [1, S, S, 3], a small deterministic image for a
prompt and seed), so clients call emulated and real endpoints the same way.

Profile, from the config's ``parameters`` (all strings)::

    latency = max(0, normal(latency_s, jitter_s)) * time_scale * slow_down

Each request is held for ``latency`` measured from the start of ``execute`` with a blocking ``time.sleep``
(a timed wait in the kernel: no CPU is burnt while waiting). Requests served in parallel = the instance count
(``instance_group.count`` = the profile's ``concurrency``): one instance serves one request at a time.

Why instances and not ``async def execute``: with a non-decoupled model Triton hands an instance its next request
only once ``execute`` has returned, so an async execute in one instance serialises just as a blocking one does;
a decoupled model would overlap requests but Triton's HTTP ``infer`` refuses decoupled models (501). Measured on
2 cores, 4 closed-loop HTTP clients for 4 s, 100 ms sleep per request (tritonserver 2.51, python backend):

    async execute, 1 instance   mean 407.9 ms  p99 417.1 ms   10.0 req/s   (serialised: wrong profile)
    async execute, 4 instances  mean 102.9 ms  p99 108.8 ms   39.0 req/s
    time.sleep,    4 instances  mean 102.8 ms  p99 113.0 ms   39.2 req/s
    decoupled async, 1 instance HTTP infer -> 501 "doesn't support models with decoupled transaction policy"

So the profile's concurrency is the instance count, and a capacity change is a model reload with a new count.
"""
import json
import random
import time
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

_DEFAULTS = {"latency_s": "0.1", "jitter_s": "0", "time_scale": "1", "slow_down": "1", "image_size": "8"}


def _parameters(model_config):
    values = dict(_DEFAULTS)
    for key, value in model_config.get("parameters", {}).items():
        values[key] = value.get("string_value", "")
    return values


class TritonPythonModel:
    """One instance of the emulated accelerator: one request at a time, each held for the profile's latency."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = _parameters(config)
        self.model_name = config.get("name", "stable_diffusion")
        scale = float(params["time_scale"]) * float(params["slow_down"])
        self.latency_s = float(params["latency_s"]) * scale
        self.jitter_s = float(params["jitter_s"]) * scale
        self.image_size = int(params["image_size"])
        instance = args.get("model_instance_name", "0")
        self.rng = random.Random(zlib.crc32(f"{params.get('endpoint', '')}/{instance}".encode()))
        pb_utils.Logger.log_info(
            f"tritonmix EMULATED accelerator: endpoint={params.get('endpoint', '?')} profile={params.get('profile', '?')}"
            f" model={self.model_name} instance={instance} latency={self.latency_s * 1000:.1f} ms"
            f" jitter={self.jitter_s * 1000:.1f} ms concurrency={params.get('concurrency', '?')}"
            f" slow_down={params['slow_down']} (emulated: true)"
        )

    def _delay_s(self):
        if self.jitter_s <= 0:
            return self.latency_s
        return max(0.0, self.rng.gauss(self.latency_s, self.jitter_s))

    def _image(self, request):
        prompt = pb_utils.get_input_tensor_by_name(request, "prompt")
        seed = pb_utils.get_input_tensor_by_name(request, "seed")
        text = b"" if prompt is None else b"".join(
            v if isinstance(v, bytes) else str(v).encode() for v in prompt.as_numpy().reshape(-1))
        seed_value = 0 if seed is None else int(seed.as_numpy().reshape(-1)[0])
        rng = np.random.default_rng([zlib.crc32(text), seed_value & 0xFFFFFFFF])
        size = self.image_size
        return rng.integers(0, 256, size=(1, size, size, 3), dtype=np.uint8)

    def execute(self, requests):
        responses = []
        for request in requests:
            started = time.monotonic()
            image = self._image(request)
            remaining_s = self._delay_s() - (time.monotonic() - started)
            if remaining_s > 0:
                time.sleep(remaining_s)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("image", image)]))
        return responses

    def finalize(self):
        pb_utils.Logger.log_info(f"tritonmix EMULATED accelerator {self.model_name}: instance stopped")
