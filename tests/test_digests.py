"""Streamed file hashes against independent references: ``git hash-object``, hashlib, sha256sum."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from unittest import mock

import numpy as np
import pytest
import torch

from virnuc_core.util.digests import (
    BLOCK,
    SAMPLED_BLOCK,
    SAMPLED_BLOCKS,
    cached_sha256,
    combined_sha256,
    file_digests,
    git_blob_id,
    sampled_fingerprint,
    sha256_file,
    tensors_sha256,
)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("digests")
    rng = np.random.default_rng(3)
    contents = {
        "empty": b"",
        "text.txt": b"hello\n",
        "nul.bin": b"\0\0blob 3\0\n" * 7,
        "block.bin": rng.bytes(BLOCK),  # exactly one block
        "blocks.bin": rng.bytes(BLOCK + 12345),  # crosses a block boundary
    }
    for name, data in contents.items():
        (root / name).write_bytes(data)
    return root, contents


@needs_git
@pytest.mark.parametrize("name", ["empty", "text.txt", "nul.bin", "block.bin", "blocks.bin"])
def test_git_blob_id_matches_git_hash_object(files, name):
    root, _ = files
    want = subprocess.run(
        ["git", "hash-object", str(root / name)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_blob_id(root / name) == want


def test_empty_file_blob_id_is_gits_empty_blob(files):
    root, _ = files
    assert git_blob_id(root / "empty") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


@pytest.mark.parametrize("name", ["empty", "text.txt", "blocks.bin"])
def test_sha256_matches_hashlib_and_sha256sum(files, name):
    root, contents = files
    want = hashlib.sha256(contents[name]).hexdigest()
    assert sha256_file(root / name) == want
    if shutil.which("sha256sum"):
        out = subprocess.run(["sha256sum", str(root / name)], capture_output=True, text=True)
        assert out.stdout.split()[0] == want


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_small_blocks_give_the_same_digests_in_one_pass(files, block):
    root, contents = files
    got = file_digests(root / "nul.bin", ("sha256", "git_blob", "md5"), block=block)
    data = contents["nul.bin"]
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["md5"] == hashlib.md5(data).hexdigest()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert got["git_blob"] == blob


def test_combined_sha256_is_sha256sum_style_and_one_file_is_itself():
    a, b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    assert combined_sha256({"x.bin": a}) == a
    lines = f"{a}  a.bin\n{b}  b.bin\n"
    assert combined_sha256({"b.bin": b, "a.bin": a}) == hashlib.sha256(lines.encode()).hexdigest()


def test_tensor_hash_sees_every_element_dtype_shape_and_name():
    base = {"w": torch.arange(5000, dtype=torch.float32).reshape(50, 100), "b": torch.zeros(3)}
    h = tensors_sha256(base)
    assert h == tensors_sha256({k: v.clone() for k, v in base.items()})
    last = {**base, "w": base["w"].clone()}
    last["w"][-1, -1] += 1  # past the first 4 KB
    assert tensors_sha256(last) != h
    assert tensors_sha256({**base, "w": base["w"].double()}) != h
    assert tensors_sha256({**base, "w": base["w"].reshape(100, 50)}) != h
    assert tensors_sha256({"v": base["w"], "b": base["b"]}) != h
    assert tensors_sha256({**base, "w": base["w"].t().contiguous().t()}) == h  # layout: no


def test_cached_sha256_sees_a_file_rewritten_in_place_at_the_same_size(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 100)
    assert cached_sha256(path) == hashlib.sha256(b"a" * 100).hexdigest()
    before = os.stat(path)
    with open(path, "r+b") as fh:  # same file (inode), same size, other bytes
        fh.write(b"b" * 100)
    # a rewrite gets a new mtime; set one a second later so a coarse clock cannot hide it
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    after = os.stat(path)
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    assert cached_sha256(path) == hashlib.sha256(b"b" * 100).hexdigest()


# -- sampled fingerprints (what the workflow tracks reads files by) ---------------------------


def changed_positions(path, data: bytes, **kw) -> list[int]:
    """The byte positions whose change (alone) changes the file's sampled fingerprint."""
    base = sampled_fingerprint(path, **kw)
    seen = []
    for i in range(len(data)):
        path.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :])
        if sampled_fingerprint(path, **kw) != base:
            seen.append(i)
    path.write_bytes(data)
    return seen


def test_sampled_fingerprint_sees_the_head_the_tail_and_evenly_spaced_blocks(tmp_path):
    data = np.random.default_rng(5).bytes(300)
    path = tmp_path / "a.bin"
    path.write_bytes(data)
    seen = changed_positions(path, data, blocks=4, block=6)
    runs = [seen[i : i + 6] for i in range(0, len(seen), 6)]
    assert len(seen) == 24 and all(r == list(range(r[0], r[0] + 6)) for r in runs)
    starts = [r[0] for r in runs]
    assert starts[0] == 0 and starts[-1] == 294  # the head and the tail
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 1  # evenly spaced
    # no larger than the blocks: every byte counts
    assert changed_positions(path, data[:24], blocks=4, block=6) == list(range(24))


def test_sampled_fingerprint_follows_content_and_size_not_name_or_time(tmp_path):
    data = np.random.default_rng(6).bytes(3_000_000)
    a, b = tmp_path / "a.fa", tmp_path / "b.fa"
    a.write_bytes(data)
    b.write_bytes(data)
    os.utime(b, ns=(0, 0))
    assert sampled_fingerprint(a) == sampled_fingerprint(b)
    assert sampled_fingerprint(a).startswith("3,000,000 bytes, sampled sha256 ")
    b.write_bytes(data + b"\n")  # one byte more
    assert sampled_fingerprint(a) != sampled_fingerprint(b)
    b.write_bytes(data[:-1] + b"\n")  # the last byte
    assert sampled_fingerprint(a) != sampled_fingerprint(b)


def test_sampled_fingerprint_reads_little_of_a_large_file_and_nothing_of_a_pipe(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(10**9)  # sparse
    read = []
    real = os.pread

    def counting(fd, n, offset):
        read.append(n)
        return real(fd, n, offset)

    with mock.patch.object(os, "pread", counting):
        assert sampled_fingerprint(big).startswith("1,000,000,000 bytes")
    assert sum(read) == SAMPLED_BLOCKS * SAMPLED_BLOCK == 1 << 20
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a reader that opens it does not hang
    try:
        assert sampled_fingerprint(fifo) == "not a regular file"
    finally:
        os.close(held)
