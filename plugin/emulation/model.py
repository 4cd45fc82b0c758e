"""EMULATED accelerator: a Triton python-backend model that reproduces a hardware service profile.

This file is copied, unchanged, into a generated model repository as ``<model>/1/model.py`` (see
``tritonmix.emulation.repository``); it runs inside Triton's python backend stub and imports nothing of tritonmix.

It serves the same I/O as the real Stable Diffusion ensemble (``prompt`` TYPE_STRING [1]; optional ``seed`` INT64,
``steps`` INT32, ``guidance_scale`` FP32; output ``image`` UINT8 [1, S, S, 3], a small deterministic image for a
prompt and seed), so clients call emulated and real endpoints the same way.

Profile, from the config's ``parameters`` (all strings)::

    latency = max(0, normal(latency_s, jitter_s)) * time_scale * slow_down

Each request is held for ``latency`` from the moment it gets a slot, with a blocking ``time.sleep`` (a timed wait in
the kernel: no CPU is burnt while waiting). One instance serves one request at a time, and the instance count
(``instance_group.count``) is the most requests the endpoint can ever serve in parallel.

Live faults without a reload: ``control.json`` beside ``config.pbtxt`` (``{"concurrency": C, "slow_down": f}``,
written atomically by ``tritonmix.emulation.repository.write_control``) is re-read when its inode or mtime changed,
looked at no more than every ``CONTROL_CHECK_S``. At most ``C`` of the instances serve at once: a request takes one
of ``C`` slots, byte-range locks (``fcntl.lockf``) on ``slots.lock`` shared by the instances' processes, polling every
``SLOT_POLL_S`` while all are taken. So a capacity cut or a slow-down takes effect at the next request, and requests
already being served finish on the old settings; no request is held by a model reload. (A reload, which starts new
stub processes, held in-flight requests for about 1.5 s on a 2-core machine: an artefact no real pool shows.)

What a cut looks like from outside: requests beyond ``C`` wait for a slot inside ``execute``, so Triton counts that
wait as compute time (``nv_inference_compute_infer_duration_us``) rather than queue time, while throughput and
latency are those of ``C`` slots. The model's own counters say what was served and what was waited:
``tritonmix_emulated_service_us`` (time holding a slot: the accelerator's busy time, what a pool is billed for) and
``tritonmix_emulated_slot_wait_us``, per instance, on Triton's metrics port.

Why instances and not ``async def execute``: with a non-decoupled model Triton hands an instance its next request
only once ``execute`` has returned, so an async execute in one instance serialises just as a blocking one does;
a decoupled model would overlap requests but Triton's HTTP ``infer`` refuses decoupled models (501). Measured on
2 cores, 4 closed-loop HTTP clients for 4 s, 100 ms sleep per request (tritonserver 2.51, python backend):

    async execute, 1 instance   mean 407.9 ms  p99 417.1 ms   10.0 req/s   (serialised: wrong profile)
    async execute, 4 instances  mean 102.9 ms  p99 108.8 ms   39.0 req/s
    time.sleep,    4 instances  mean 102.8 ms  p99 113.0 ms   39.2 req/s
    decoupled async, 1 instance HTTP infer -> 501 "doesn't support models with decoupled transaction policy"
"""
import fcntl
import json
import os
import random
import time
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

_DEFAULTS = {"latency_s": "0.1", "jitter_s": "0", "time_scale": "1", "slow_down": "1", "image_size": "8",
             "concurrency": "0"}
CONTROL_FILE = "control.json"
SLOTS_FILE = "slots.lock"
CONTROL_CHECK_S = 0.05
SLOT_POLL_S = 0.001


def _parameters(model_config):
    values = dict(_DEFAULTS)
    for key, value in model_config.get("parameters", {}).items():
        values[key] = value.get("string_value", "")
    return values


def _instance_count(model_config):
    return sum(int(group.get("count", 1)) for group in model_config.get("instance_group", [])) or 1


class _Control:
    """The live concurrency limit and slow-down factor, from ``control.json`` (defaults: the config's)."""

    def __init__(self, model_dir, concurrency, slow_down):
        self.path = os.path.join(model_dir, CONTROL_FILE)
        self.concurrency, self.slow_down = concurrency, slow_down
        self._stamp, self._checked = None, -1.0

    def refresh(self, now):
        if now - self._checked < CONTROL_CHECK_S:
            return
        self._checked = now
        try:
            info = os.stat(self.path)
        except OSError:
            return
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        try:
            with open(self.path) as handle:
                values = json.load(handle)
        except (OSError, ValueError):
            return  # a partial file cannot be seen (atomic rename); anything else: keep the settings in force
        self._stamp = stamp
        self.concurrency = max(1, int(values.get("concurrency", self.concurrency)))
        self.slow_down = float(values.get("slow_down", self.slow_down))


class _Slots:
    """At most ``limit`` holders across the instances' processes: one byte-range lock per slot on a shared file."""

    def __init__(self, model_dir):
        self.fd = os.open(os.path.join(model_dir, SLOTS_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        self.held = None

    def acquire(self, control):
        """Block until one of ``control.concurrency`` slots is ours; returns the seconds waited."""
        started = time.monotonic()
        while True:
            now = time.monotonic()
            control.refresh(now)
            for slot in range(control.concurrency):
                try:
                    fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
                except OSError:
                    continue
                self.held = slot
                return now - started
            time.sleep(SLOT_POLL_S)

    def release(self):
        if self.held is not None:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.held)
            self.held = None


def _counter(name, description, labels):
    """A counter on Triton's metrics port, or None where this python backend has no custom metrics."""
    try:
        family = pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
        return family, family.Metric(labels=labels)
    except Exception:  # noqa: BLE001 - metrics are a report, never a reason to fail serving
        return None


class TritonPythonModel:
    """One instance of the emulated accelerator: one request at a time, each held for the profile's latency."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = _parameters(config)
        self.model_name = config.get("name", "stable_diffusion")
        self.time_scale = float(params["time_scale"])
        self.base_latency_s = float(params["latency_s"])
        self.base_jitter_s = float(params["jitter_s"])
        self.image_size = int(params["image_size"])
        model_dir = args.get("model_repository") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        instances = _instance_count(config)
        concurrency = int(params["concurrency"]) if params["concurrency"].isdigit() else 0
        self.control = _Control(model_dir, min(concurrency or instances, instances), float(params["slow_down"]))
        self.control.refresh(time.monotonic())
        self.slots = _Slots(model_dir)
        instance = args.get("model_instance_name", "0")
        self.rng = random.Random(zlib.crc32(f"{params.get('endpoint', '')}/{instance}".encode()))
        labels = {"model": self.model_name, "instance": instance}
        self.service_us = _counter("tritonmix_emulated_service_us",
                                   "EMULATED accelerator: cumulative time requests held a slot (busy time), us", labels)
        self.wait_us = _counter("tritonmix_emulated_slot_wait_us",
                                "EMULATED accelerator: cumulative time requests waited for a slot, us", labels)
        pb_utils.Logger.log_info(
            f"tritonmix EMULATED accelerator: endpoint={params.get('endpoint', '?')} profile={params.get('profile', '?')}"
            f" model={self.model_name} instance={instance} latency={self.base_latency_s * self.time_scale * 1000:.1f} ms"
            f" instances={instances} concurrency={self.control.concurrency} slow_down={self.control.slow_down}"
            f" (emulated: true)"
        )

    def _delay_s(self):
        scale = self.time_scale * self.control.slow_down
        latency_s, jitter_s = self.base_latency_s * scale, self.base_jitter_s * scale
        if jitter_s <= 0:
            return latency_s
        return max(0.0, self.rng.gauss(latency_s, jitter_s))

    def _image(self, request):
        prompt = pb_utils.get_input_tensor_by_name(request, "prompt")
        seed = pb_utils.get_input_tensor_by_name(request, "seed")
        text = b"" if prompt is None else b"".join(
            v if isinstance(v, bytes) else str(v).encode() for v in prompt.as_numpy().reshape(-1))
        seed_value = 0 if seed is None else int(seed.as_numpy().reshape(-1)[0])
        rng = np.random.default_rng([zlib.crc32(text), seed_value & 0xFFFFFFFF])
        size = self.image_size
        return rng.integers(0, 256, size=(1, size, size, 3), dtype=np.uint8)

    def _serve(self, request):
        waited_s = self.slots.acquire(self.control)
        started = time.monotonic()
        try:
            image = self._image(request)
            remaining_s = self._delay_s() - (time.monotonic() - started)
            if remaining_s > 0:
                time.sleep(remaining_s)
        finally:
            self.slots.release()
        _add(self.wait_us, waited_s)
        _add(self.service_us, time.monotonic() - started)
        return image

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("image", self._serve(request))]) for request in requests]

    def finalize(self):
        self.slots.release()
        os.close(self.slots.fd)
        self.service_us = self.wait_us = None  # metrics before their families
        pb_utils.Logger.log_info(f"tritonmix EMULATED accelerator {self.model_name}: instance stopped")


def _add(counter, seconds):
    if counter is not None:
        try:
            counter[1].increment(seconds * 1e6)
        except Exception:  # noqa: BLE001 - see _counter
            pass
