"""Streamed content hashes of files and tensors: sha256, git blob ids, several in one pass.

Files are read in 8 MiB blocks into one reused buffer (``readinto``), so hashing an 11 GB
checkpoint holds 8 MiB of memory, and every digest asked for is updated from the same block:
sha256 and a git blob id of a classifier cost one read of the file, not two.

:func:`sampled_fingerprint` tells a large file's content cheaply (its size and a few blocks):
what the workflow tracks reads files by (a reads file replaced by other content with its old
mtime must still rerun the index).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only where tensors are hashed: the Snakefile imports this module
    import torch

BLOCK = 8 * 1024 * 1024  # large enough that per-call overhead is noise, small enough to stay cached


def _git_blob(size: int):
    # git hashes "blob <size>\0" + content with SHA-1: the id `git hash-object` prints
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % size)
    return h


def file_digests(
    path: str | os.PathLike, names: Iterable[str] = ("sha256",), block: int = BLOCK
) -> dict[str, str]:
    """Hex digests of one file's content, read once: any ``hashlib`` name, or ``"git_blob"``.

    ``{"sha256": ..., "git_blob": ...}`` for ``names=("sha256", "git_blob")``. The size in the
    git header is taken from the open file; a file that grows or shrinks while it is read raises
    ``OSError`` rather than giving a wrong id.
    """
    names = tuple(names)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        hashes = {n: _git_blob(size) if n == "git_blob" else hashlib.new(n) for n in names}
        buf = bytearray(block)
        view = memoryview(buf)
        done = 0
        while n := f.readinto(buf):
            chunk = view[:n]
            for h in hashes.values():
                h.update(chunk)  # hashlib releases the GIL on large buffers
            done += n
    if done != size:
        raise OSError(f"{path}: changed while it was read ({size} bytes expected, {done} read)")
    return {n: h.hexdigest() for n, h in hashes.items()}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's content, streamed."""
    return file_digests(path, ("sha256",))["sha256"]


def git_blob_id(path: str | os.PathLike) -> str:
    """The file's git blob id (what ``git hash-object FILE`` prints), streamed."""
    return file_digests(path, ("git_blob",))["git_blob"]


# 16 reads of 64 KiB: 1 MiB a file, whatever its size (16 random reads on a cold cache).
SAMPLED_BLOCKS = 16
SAMPLED_BLOCK = 64 * 1024


def sampled_fingerprint(
    path: str | os.PathLike, blocks: int = SAMPLED_BLOCKS, block: int = SAMPLED_BLOCK
) -> str:
    """``"<size> bytes, sampled sha256 <hex>"``: a file's size and the sha256 of ``blocks``
    blocks of ``block`` bytes, the head, the tail and evenly spaced ones between (the whole
    content when it is no larger).

    Cheap whatever the size (``blocks * block`` bytes read), and it changes with the size and
    with any change inside a sampled block; a same-size change elsewhere is not seen (Snakemake's
    mtime trigger sees ordinary edits). Not a regular file (a pipe): ``"not a regular file"``,
    nothing read from it.
    """
    if blocks < 2 or block < 1:
        raise ValueError(f"blocks must be at least 2 and block at least 1, got {blocks}, {block}")
    if not stat.S_ISREG(os.stat(path).st_mode):
        return "not a regular file"
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        h = hashlib.sha256(b"sampled %d %d %d\0" % (size, blocks, block))
        if size <= blocks * block:
            spans = [(0, size)]
        else:  # first at 0, last at size - block, the others evenly between
            spans = [((size - block) * i // (blocks - 1), block) for i in range(blocks)]
        for offset, length in spans:
            data = os.pread(f.fileno(), length, offset)
            while len(data) < length:  # short reads (network file systems), or a shrunk file
                more = os.pread(f.fileno(), length - len(data), offset + len(data))
                if not more:
                    raise OSError(f"{path}: changed while it was read (shorter than {size})")
                data += more
            h.update(data)
    return f"{size:,} bytes, sampled sha256 {h.hexdigest()}"


_CACHE: dict[tuple, str] = {}


def cached_sha256(path: str | os.PathLike) -> str:
    """:func:`sha256_file`, remembered in this process while the file's size, mtime and inode
    stay the same (a validation job builds its reference model from the same file again)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    if key not in _CACHE:
        _CACHE[key] = sha256_file(path)
    return _CACHE[key]


def combined_sha256(digests: Mapping[str, str]) -> str:
    """One sha256 for several files: of the sorted ``name sha256`` lines (like ``sha256sum``)."""
    if len(digests) == 1:
        return next(iter(digests.values()))  # one file: its own sha256, checkable by sha256sum
    text = "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))
    return hashlib.sha256(text.encode()).hexdigest()


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and full content, names sorted.

    For weights built in code (the ``tiny`` models), which have no file to hash.
    """
    import torch

    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy())  # the raw bytes, no copy
    return h.hexdigest()
