"""Parity figures: exported parts against torch on fresh random inputs, and images against the diffusers pipeline.

``max_abs`` is max |exported - torch|; ``max_rel`` is ``max_abs / max |torch|`` (relative to the reference's peak, so
values near zero do not blow it up). A part passes when ``max_abs <= atol + rtol * max |torch|`` for its dtype.
Images (uint8) pass when no value is off by more than 1 and at most ``MAX_OFF_BY_ONE_FRACTION`` of them are off by 1.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: dtype -> (atol, rtol). "int8" is the dynamically quantized UNet: a figure to record, not a bit-exact promise.
TOLERANCES: dict[str, tuple[float, float]] = {"float32": (1e-4, 1e-3), "float16": (1e-2, 1e-2), "int8": (0.5, 0.5)}
MAX_OFF_BY_ONE_FRACTION = 0.01
BATCH_SIZES: tuple[int, ...] = (1, 2)


class ParityError(RuntimeError):
    """An exported part or image differs from the reference beyond its tolerance."""


@dataclass(frozen=True)
class Figure:
    name: str
    batch: int
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool

    def as_dict(self) -> dict:
        return asdict(self)


def compare(name: str, batch: int, got: np.ndarray, ref: np.ndarray, dtype: str = "float32") -> Figure:
    atol, rtol = TOLERANCES[dtype]
    got64, ref64 = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got64.shape != ref64.shape:
        raise ParityError("%s: shape %s != reference %s" % (name, got64.shape, ref64.shape))
    peak = float(np.abs(ref64).max()) if ref64.size else 0.0
    max_abs = float(np.abs(got64 - ref64).max()) if ref64.size else 0.0
    passed = bool(np.isfinite(max_abs) and max_abs <= atol + rtol * peak)
    figure = Figure(name, batch, max_abs, max_abs / peak if peak else max_abs, atol, rtol, passed)
    logger.info("parity %s batch %d: max_abs %.3g max_rel %.3g %s", name, batch, max_abs, figure.max_rel,
                "ok" if passed else "FAILED")
    return figure


Runner = Callable[[Sequence[np.ndarray]], np.ndarray]


def part_figures(name: str, reference: torch.nn.Module, runner: Runner,
                 make_inputs: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]],
                 dtype: str = "float32", seed: int = 1234) -> list[Figure]:
    """Run ``runner`` and torch on the same fresh random inputs at every batch size in :data:`BATCH_SIZES`."""
    figures = []
    generator = torch.Generator().manual_seed(seed)
    for batch in BATCH_SIZES:
        inputs = make_inputs(batch, generator)
        with torch.no_grad():
            ref = reference(*inputs).numpy()
        figures.append(compare(name, batch, runner([t.numpy() for t in inputs]), ref, dtype))
    return figures


def onnx_runner(path: str, input_names: Sequence[str]) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda arrays: session.run(None, dict(zip(input_names, arrays)))[0]


def torchscript_runner(path: str) -> Runner:
    module = torch.jit.load(path)

    def run(arrays: Sequence[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return module(*[torch.from_numpy(a) for a in arrays]).numpy()

    return run


def image_figure(name: str, got: np.ndarray, ref: np.ndarray) -> dict:
    """uint8 images: count of values off by 1 and the largest difference."""
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    off_by_one = int((diff == 1).sum())
    max_diff = int(diff.max()) if diff.size else 0
    passed = got.shape == ref.shape and max_diff <= 1 and off_by_one <= MAX_OFF_BY_ONE_FRACTION * diff.size
    return {"name": name, "shape": list(got.shape), "max_abs": max_diff, "off_by_one": off_by_one,
            "values": int(diff.size), "passed": bool(passed)}


def raise_on_failure(figures: Sequence[Figure]) -> None:
    failed = [f for f in figures if not f.passed]
    if failed:
        f = failed[0]
        raise ParityError("parity failed for %s at batch %d: max abs %.3g > tolerance (atol %g, rtol %g)"
                          % (f.name, f.batch, f.max_abs, f.atol, f.rtol))
