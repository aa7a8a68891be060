"""Writing files so that a reader never sees a partial one; whether a file changed while it was
read; locks that child processes drop."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    On any exception the temporary file is removed and ``final`` is left untouched, so a crash
    never leaves a partial output where Snakemake (or a user) would take it for a finished one.
    A full disk or quota while the block writes is raised as an OSError naming ``final`` (a
    plain write's error names no file; HDF5's names the temporary one).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.part")
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as err:
        code = no_space_errno(err)
        # only an error that names no file, or the temporary one: another file's error keeps
        # its own name (a log, a nested atomic_path)
        if code is None or err.filename not in (None, str(tmp), tmp):
            raise
        raise OSError(code, os.strerror(code), str(final)) from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_writer(final: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``final`` for writing; rename it into place on success."""
    with atomic_path(final) as tmp, open(tmp, mode) as handle:
        yield handle


def no_space_errno(err: BaseException) -> int | None:
    """ENOSPC or EDQUOT when ``err`` says the disk (or the quota) is full, else None. HDF5's
    errors carry no errno, only their message ("..., errno = 28, error message = ...")."""
    if not isinstance(err, OSError):
        return None
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return err.errno
    text = str(err)
    for code in (errno.ENOSPC, errno.EDQUOT):
        if f"errno = {code}," in text or os.strerror(code) in text:
            return code
    return None


# File descriptors holding a lock (flock) of this process. A forked child (a DataLoader reader)
# inherits them, and an flock lasts while any descriptor of it is open: a reader outliving a
# killed job would keep its GPU slot and work directory locked. Children close them at start.
_LOCK_FDS: set[int] = set()


def hold_lock_fd(fd: int) -> int:
    """Register ``fd`` as holding a lock (see :func:`close_inherited_locks`); returns it."""
    _LOCK_FDS.add(fd)
    return fd


def release_lock_fd(fd: int) -> None:
    """Close a registered lock descriptor (releases the lock once no child holds it)."""
    _LOCK_FDS.discard(fd)
    os.close(fd)


def close_inherited_locks() -> None:
    """In a forked child: close the parent's lock descriptors, so the locks die with it."""
    for fd in list(_LOCK_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _LOCK_FDS.clear()


def describe_change(path: str | os.PathLike, fd: int, before: os.stat_result) -> str | None:
    """How the regular file ``path``, open as ``fd``, changed since ``before`` (``os.fstat``
    of ``fd`` when it was opened), or None if it did not: its size or modification time, or
    the path now naming another file (or none). Not regular files (pipes) are never changed."""
    if not stat.S_ISREG(before.st_mode):
        return None
    now = os.fstat(fd)
    if now.st_size != before.st_size:
        return f"size {before.st_size:,} -> {now.st_size:,} bytes"
    if now.st_mtime_ns != before.st_mtime_ns:
        return "modified in place, same size"
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return "deleted"
    if (named.st_ino, named.st_dev) != (before.st_ino, before.st_dev):
        return f"replaced by another file of {named.st_size:,} bytes"
    return None
