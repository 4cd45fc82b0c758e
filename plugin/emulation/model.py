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

Live faults without a reload: ``control.json`` beside ``config.pbtxt`` (``{"concurrency": C, "slow_down": f,
"park_epoch": k}``, written atomically by ``tritonmix.emulation.repository.write_control``) is re-read when its inode
or mtime changed, looked at no more than every ``CONTROL_CHECK_S``. A slow-down applies from the next request on.
A capacity cut to ``C`` below the instance count ``N`` works in two ways at once:

- ``LocalFleet`` sends ``N - C`` parking requests (prompt ``PARK_PROMPT``, seed = the park epoch). Each holds one
  instance, serving nothing, until the epoch changes; then it fails (a server-side failure, never a client's
  request). So only ``C`` instances take requests, and the rest wait in Triton's own queue: pending count, queue
  time and compute time look as they would on a pool of ``C`` accelerators.
- until the parking requests have reached their instances (they queue behind what was already queued), at most
  ``C`` requests are served at once, in arrival order (``_Slots``: a ticket semaphore in a small file the instances'
  processes share, polled every ``SLOT_POLL_S``).

Requests already being served finish on the old settings; nothing is held by a model reload. (A reload, which
starts or stops stub processes, held in-flight requests for about 1.5-1.9 s on a 2-core machine: an artefact no
real pool shows.) The model's own counters, per instance on Triton's metrics port: ``tritonmix_emulated_service_us``
(time requests held a slot: the accelerator's busy time, what a pool is billed for),
``tritonmix_emulated_slot_wait_us`` (time waited for a slot inside ``execute``, which Triton counts as compute),
``tritonmix_emulated_cancelled`` (requests that stopped because their client cancelled them), and
the gauge ``tritonmix_emulated_parked`` (1 while the instance holds a parking request: the parking requests out less
the parked ones are those still waiting in Triton's queue, counted in its pending gauge as no client's request is).

A request its client cancelled (gRPC: a hedge's losing copy, a call past its deadline; Triton's HTTP frontend passes
no cancellation on) stops as a generative model that checks ``request.is_cancelled()`` between its denoising steps
does: one still in Triton's queue never takes a slot, one being served gives its slot back at the next of
``CANCEL_CHECKS`` checks spread over its latency (at most every ``CANCEL_CHECK_MIN_S``), and only the time it held
the slot is busy time. It ends as a failed execute (Triton counts a failure, not a success whose short compute time
would pull the endpoint's measured service time down). Profile parameter ``cancellable`` "0": every request runs to
its end, as an ensemble's steps or a backend without cancellation support do (checked on Triton 2.51: a python
model's ``is_cancelled()`` turns true within one check of a gRPC client's cancel, for a request being served and
for one still queued).

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
import mmap
import os
import random
import struct
import time
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

_DEFAULTS = {"latency_s": "0.1", "jitter_s": "0", "time_scale": "1", "slow_down": "1", "image_size": "8",
             "concurrency": "0", "cancellable": "1"}
CONTROL_FILE = "control.json"
SLOTS_PREFIX = "slots-"
CONTROL_CHECK_S = 0.05
SLOT_POLL_S = 0.001
#: the prompt of a parking request (``seed`` = its park epoch): it holds an instance, serves nothing, fails when let go
PARK_PROMPT = b"\x00tritonmix-emulation:park"
PARK_POLL_S = 0.01
#: a request being served looks for its client's cancellation this many times over its latency ...
CANCEL_CHECKS = 8
#: ... and no more often than this: each look is a round trip between the stub and the backend (about 0.1 ms),
#: and over HTTP, which passes no cancellation on, every look is overhead (benches/results/scenario-quick.md)
CANCEL_CHECK_MIN_S = 0.01


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
        self.park_epoch = 0
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
        self.park_epoch = int(values.get("park_epoch", self.park_epoch))


class _Slots:
    """A FIFO counting semaphore across the instances' processes: at most ``limit`` holders, served in arrival order.

    Two counters in a small file shared by every instance of this server (``slots-<server pid>.bin``, mmap'd):
    ``next`` (tickets handed out) and ``released`` (holders done). A request takes ticket ``t = next++`` and holds a
    slot once ``t < released + limit``; it polls every ``SLOT_POLL_S`` (re-reading the limit) until then. Updates
    happen under ``flock``; the reads are aligned 8-byte loads. So a cut takes effect for the next ticket, holders
    finish on the old limit, and no instance is starved by one that frees a slot and takes a new request at once
    (byte-range locks, tried in turn, let that happen: a request waited 2 s behind a limit of 1). The file is per
    server process, so a restart after a SIGKILL (holders never released) starts from zero.
    """

    _LAYOUT = struct.Struct("<qq")  # next, released

    def __init__(self, model_dir):
        _remove_stale(model_dir)
        path = os.path.join(model_dir, f"{SLOTS_PREFIX}{os.getppid()}.bin")
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self.fd).st_size < self._LAYOUT.size:
                os.ftruncate(self.fd, self._LAYOUT.size)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.map = mmap.mmap(self.fd, self._LAYOUT.size)
        self.held = False

    def _add(self, index):
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            values = list(self._LAYOUT.unpack_from(self.map))
            values[index] += 1
            self._LAYOUT.pack_into(self.map, 0, *values)
            return values[index] - 1
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def acquire(self, control):
        """Block until this request holds a slot; returns the seconds waited."""
        started = time.monotonic()
        ticket = self._add(0)
        self.held = True
        while True:
            now = time.monotonic()
            control.refresh(now)
            if ticket < self._LAYOUT.unpack_from(self.map)[1] + control.concurrency:
                return now - started
            time.sleep(SLOT_POLL_S)

    def release(self):
        if self.held:
            self.held = False
            self._add(1)

    def close(self):
        self.release()
        self.map.close()
        os.close(self.fd)


def _remove_stale(model_dir):
    """Slot files of servers that are gone (a killed server never removes its own)."""
    for name in os.listdir(model_dir):
        if name.startswith(SLOTS_PREFIX) and name.endswith(".bin"):
            pid = name[len(SLOTS_PREFIX):-len(".bin")]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                try:
                    os.unlink(os.path.join(model_dir, name))
                except OSError:
                    pass


def _metric(name, description, labels, kind="COUNTER"):
    """A counter (or a gauge: ``kind="GAUGE"``) on Triton's metrics port, or None where this python backend has no
    custom metrics."""
    try:
        family = pb_utils.MetricFamily(name=name, description=description, kind=getattr(pb_utils.MetricFamily, kind))
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
        self.cancellable = params["cancellable"] != "0"
        model_dir = args.get("model_repository") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        instances = _instance_count(config)
        concurrency = int(params["concurrency"]) if params["concurrency"].isdigit() else 0
        self.control = _Control(model_dir, min(concurrency or instances, instances), float(params["slow_down"]))
        self.control.refresh(time.monotonic())
        self.slots = _Slots(model_dir)
        instance = args.get("model_instance_name", "0")
        self.rng = random.Random(zlib.crc32(f"{params.get('endpoint', '')}/{instance}".encode()))
        labels = {"model": self.model_name, "instance": instance}
        self.service_us = _metric("tritonmix_emulated_service_us",
                                  "EMULATED accelerator: cumulative time requests held a slot (busy time), us", labels)
        self.wait_us = _metric("tritonmix_emulated_slot_wait_us",
                               "EMULATED accelerator: cumulative time requests waited for a slot, us", labels)
        self.cancelled = _metric("tritonmix_emulated_cancelled",
                                 "EMULATED accelerator: requests stopped because their client cancelled them", labels)
        self.parked = _metric("tritonmix_emulated_parked",
                              "EMULATED accelerator: 1 while this instance holds a parking request", labels, "GAUGE")
        pb_utils.Logger.log_info(
            f"tritonmix EMULATED accelerator: endpoint={params.get('endpoint', '?')} profile={params.get('profile', '?')}"
            f" model={self.model_name} instance={instance}"
            f" latency={self.base_latency_s * self.time_scale * 1000:.1f} ms"
            f" instances={instances} concurrency={self.control.concurrency} slow_down={self.control.slow_down}"
            f" (emulated: true)"
        )

    def _delay_s(self):
        scale = self.time_scale * self.control.slow_down
        latency_s, jitter_s = self.base_latency_s * scale, self.base_jitter_s * scale
        if jitter_s <= 0:
            return latency_s
        return max(0.0, self.rng.gauss(latency_s, jitter_s))

    def _image(self, text, seed_value):
        rng = np.random.default_rng([zlib.crc32(text), seed_value & 0xFFFFFFFF])
        size = self.image_size
        return rng.integers(0, 256, size=(1, size, size, 3), dtype=np.uint8)

    def _park(self, epoch):
        """Hold this instance while the control file's park epoch is ``epoch`` (LocalFleet parks the instances a
        capacity cut takes away, so requests beyond the capacity wait in Triton's own queue, as on real hardware).
        Then raise: Triton counts a failed execute as a failure, and not as a success with seconds of compute time
        (an error *response* would be one), so the server's counters show only the requests actually served."""
        _set(self.parked, 1.0)
        try:
            while True:
                self.control.refresh(time.monotonic())
                if self.control.park_epoch != epoch or not os.path.exists(self.control.path):
                    raise pb_utils.TritonModelException("tritonmix emulation: parked instance released")
                time.sleep(PARK_POLL_S)
        finally:
            _set(self.parked, 0.0)

    def _serve(self, request, text, seed_value):
        """Hold a slot for the profile's latency; None when the client cancelled the request (module docstring)."""
        if self.cancellable and _cancelled(request):
            _add(self.cancelled, 1)
            return None
        waited_s = self.slots.acquire(self.control)
        started = time.monotonic()
        stopped = False
        try:
            image = self._image(text, seed_value)
            delay_s = self._delay_s()
            step_s = max(CANCEL_CHECK_MIN_S, delay_s / CANCEL_CHECKS) if self.cancellable else delay_s
            while True:
                remaining_s = delay_s - (time.monotonic() - started)
                if remaining_s <= 0:
                    break
                if self.cancellable and _cancelled(request):
                    stopped = True
                    break
                time.sleep(min(step_s, remaining_s))
        finally:
            self.slots.release()
        _add(self.wait_us, waited_s * 1e6)
        _add(self.service_us, (time.monotonic() - started) * 1e6)
        if stopped:
            _add(self.cancelled, 1)
            return None
        return pb_utils.InferenceResponse([pb_utils.Tensor("image", image)])

    def execute(self, requests):
        keys = [_request_key(request) for request in requests]
        parks = [seed_value for text, seed_value in keys if text == PARK_PROMPT]
        if parks and len(keys) == 1:  # max_batch_size 0: one request per execute, so a park fails alone
            self._park(parks[0])
        responses = [self._serve(request, text, seed_value) if text != PARK_PROMPT else
                     pb_utils.InferenceResponse(error=pb_utils.TritonError("tritonmix emulation: park in a batch"))
                     for request, (text, seed_value) in zip(requests, keys)]
        if len(responses) == 1 and responses[0] is None:  # a failed execute: a failure, not a short success
            raise pb_utils.TritonModelException("tritonmix emulation: request cancelled by its client")
        return [response or pb_utils.InferenceResponse(error=_cancelled_error()) for response in responses]

    def finalize(self):
        self.slots.close()
        self.service_us = self.wait_us = self.parked = None  # metrics before their families
        pb_utils.Logger.log_info(f"tritonmix EMULATED accelerator {self.model_name}: instance stopped")


def _cancelled(request):
    """Whether the request's client cancelled it (python backends without cancellation: never)."""
    try:
        return bool(request.is_cancelled())
    except Exception:  # noqa: BLE001 - no is_cancelled on this backend, or the request is gone: serve it
        return False


def _cancelled_error():
    code = getattr(pb_utils.TritonError, "CANCELLED", None)
    message = "tritonmix emulation: request cancelled by its client"
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def _request_key(request):
    prompt = pb_utils.get_input_tensor_by_name(request, "prompt")
    seed = pb_utils.get_input_tensor_by_name(request, "seed")
    text = b"" if prompt is None else b"".join(
        v if isinstance(v, bytes) else str(v).encode() for v in prompt.as_numpy().reshape(-1))
    return text, 0 if seed is None else int(seed.as_numpy().reshape(-1)[0])


def _add(counter, value):
    if counter is not None:
        try:
            counter[1].increment(value)
        except Exception:  # noqa: BLE001 - see _metric
            pass


def _set(gauge, value):
    if gauge is not None:
        try:
            gauge[1].set(value)
        except Exception:  # noqa: BLE001 - see _metric
            pass
