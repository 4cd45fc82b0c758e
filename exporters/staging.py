"""Atomic output: build in a temporary folder beside ``out`` and rename it into place at the end.

A failed or interrupted export removes its temporary folder and leaves ``out`` as it was; an existing ``out`` is
refused unless ``force`` (then it is replaced only after the new one is complete).
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


class OutputExistsError(FileExistsError):
    """The output folder exists and ``force`` was not given."""


logger = logging.getLogger(__name__)


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputExistsError("output folder %s exists (use --force to replace it)" % out)


@contextlib.contextmanager
def staged_output(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``out``, on any error it is removed."""
    out = Path(out).absolute()
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".%s.tmp-" % out.name, dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700; the result is an ordinary folder
    try:
        yield staging
        check_output(out, force)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=".%s.old-" % out.name, dir=out.parent))
            out.rename(old / out.name)
        staging.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("wrote %s", out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
