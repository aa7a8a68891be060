"""Writing files so that a reader never sees a partial one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    On any exception the temporary file is removed and ``final`` is left untouched, so a crash
    never leaves a partial output where Snakemake (or a user) would take it for a finished one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.part")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_writer(final: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``final`` for writing; rename it into place on success."""
    with atomic_path(final) as tmp, open(tmp, mode) as handle:
        yield handle
