"""The ``tritonmix`` command line.

Each subcommand lives in its own module, which exposes ``register(subparsers)``; this file only wires them up. The
modules import their heavy dependencies (torch, diffusers, the fleet) only when their command runs, so ``--help``
works without them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

#: each module's ``register(subparsers)`` adds one or more subcommands
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "tritonmix.commands.serve",
    "tritonmix.commands.export",
    "tritonmix.commands.fleet",
    "tritonmix.commands.status",
    "tritonmix.commands.control_plane",
    "tritonmix.commands.k8s",
    "tritonmix.commands.gateway",
    "tritonmix.commands.bench",
)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonmix",
        description="Route Triton Inference Server traffic over a mixed fleet of accelerators.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"tritonmix {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
