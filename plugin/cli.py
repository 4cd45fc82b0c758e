"""The ``tritonmix`` command line.

Each subcommand lives in its own module, which exposes ``register(subparsers)``; this file only wires them up. The
modules import their heavy dependencies (torch, diffusers, the fleet) only when their command runs, so ``--help``
works without them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
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


class Terminated(SystemExit):
    """SIGTERM arrived: unwinds the command as Ctrl-C does, so that what it started is stopped on the way out."""


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the clean-up ends the process at once
    raise Terminated(128 + signum)


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM raises ``Terminated`` (exit status 143) in the main thread: a command's ``with`` blocks and the
    ``atexit`` hooks run, so a bench killed with ``kill`` or ``timeout`` leaves no Triton server, python-backend
    stub or shared-memory region behind (the default action ends the process with none of that). The long-running
    commands (serve, fleet up, the control plane, the gateway) install their own handler for an orderly stop."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exit_cleanly_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"tritonmix {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Terminated as exc:
        print(f"tritonmix {args.command}: stopped by SIGTERM", file=sys.stderr)
        return int(exc.code)
