"""Subcommands of the tritonmix CLI, one module each (see tritonmix.cli)."""
