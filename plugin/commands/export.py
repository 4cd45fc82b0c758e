"""``tritonmix export``: ``stable-diffusion`` (a diffusers pipeline -> Triton repositories per target) and
``neuron-compile`` (compile a neuron repository's TorchScript parts on an Inferentia/Trainium host)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..cli import CLIError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export models into Triton model repositories per accelerator")
    sub = parser.add_subparsers(dest="export_command", metavar="WHAT")
    sub.required = True
    sd = sub.add_parser("stable-diffusion", help="a diffusers Stable Diffusion pipeline -> repositories + manifest")
    sd.add_argument("--model", required=True, help="a local diffusers pipeline folder, or 'tiny'")
    sd.add_argument("--out", required=True, type=Path, help="output folder (DIR/<target>/, DIR/manifest.json)")
    sd.add_argument("--targets", default="python", help="comma-separated: python,cpu,gpu,neuron (default python)")
    sd.add_argument("--height", type=int, default=64)
    sd.add_argument("--width", type=int, default=64)
    sd.add_argument("--quantize", choices=["int8"], default=None, help="add a dynamically quantized unet_int8 (cpu)")
    sd.add_argument("--openvino", action="store_true", help="configure the OpenVINO accelerator on the cpu target")
    sd.add_argument("--force", action="store_true", help="replace an existing output folder")
    sd.set_defaults(func=run_stable_diffusion)
    nc = sub.add_parser("neuron-compile", help="compile DIR/neuron's TorchScript parts with torch-neuronx, in place")
    nc.add_argument("repository", type=Path, help="the neuron repository (DIR/neuron)")
    nc.set_defaults(func=run_neuron_compile)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_stable_diffusion(args: argparse.Namespace) -> int:
    from tritonmix.exporters import ParityError, TargetOptions, export_stable_diffusion

    options = TargetOptions(cpu_openvino=args.openvino)
    try:
        manifest = export_stable_diffusion(
            args.model, args.out, args.targets, height=args.height, width=args.width, force=args.force,
            quantize=args.quantize, options=options, progress=sys.stderr.isatty())
    except (ValueError, OSError, ParityError) as exc:
        raise CLIError(_one_line(exc)) from exc
    image = manifest["parity"]["image"].get("onnx_loop", {})
    worst = max((f["max_abs"] for f in manifest["parity"]["parts"]), default=0.0)
    sys.stdout.write(json.dumps({"out": str(args.out), "targets": manifest["targets"], "worst_part_max_abs": worst,
                                 "image_max_abs": image.get("max_abs"), "notices": manifest["notices"]}) + "\n")
    return 0


def run_neuron_compile(args: argparse.Namespace) -> int:
    from tritonmix.exporters.neuron_compile import NeuronUnavailableError, compile_repository

    try:
        names = compile_repository(args.repository)
    except (OSError, NeuronUnavailableError) as exc:
        raise CLIError(_one_line(exc)) from exc
    sys.stdout.write("compiled: %s\n" % (", ".join(names) or "nothing"))
    return 0
