"""All-or-nothing output directory.

A prepared data directory is only useful if it is complete: a training job
that starts on half-written binaries fails hours later or, worse, trains on
a truncated corpus.  So everything is written into ``OUT.tmp-<pid>`` next to
``OUT`` (same filesystem) and renamed into place at the very end; any
exception, KeyboardInterrupt or SIGTERM (the CLI turns it into SystemExit)
removes the temp directory.  A run killed with SIGKILL can leave a stale
``OUT.tmp-<pid>``, which never looks complete (no ``OUT``) and may be deleted.

``manifest.json`` is the completeness marker: an existing ``OUT`` with a
manifest is refused unless ``overwrite``; an existing non-empty ``OUT``
without one is refused too (it is not ours to delete) unless ``overwrite``.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from typing import Iterator

from .errors import PrepareError
from .manifest import MANIFEST


def check_output_dir(out: str, overwrite: bool) -> None:
    """Raise :class:`PrepareError` early if ``out`` may not be (re)written."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise PrepareError(f"--out {out}: exists and is not a directory; expected a directory path")
    if os.path.isdir(out) and not overwrite:
        if os.path.exists(os.path.join(out, MANIFEST)):
            raise PrepareError(
                f"--out {out}: already holds a prepared dataset ({MANIFEST}); pass --overwrite to replace it"
            )
        if os.listdir(out):
            raise PrepareError(
                f"--out {out}: exists, is not empty and has no {MANIFEST}; "
                f"expected a new or empty directory (or pass --overwrite to replace it)"
            )


def copy_replacing(src: str, dst: str) -> None:
    """``dst`` replaced whole by a copy of ``src`` (never seen half-copied)."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


@contextmanager
def atomic_output_dir(out: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a fresh temp directory; on success it becomes ``out``."""
    out = os.path.abspath(out)
    check_output_dir(out, overwrite)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)
    try:
        yield tmp
        check_output_dir(out, overwrite)  # someone else may have finished meanwhile
        if os.path.isdir(out):
            aside = f"{out}.old-{os.getpid()}"
            os.rename(out, aside)
            os.rename(tmp, out)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
