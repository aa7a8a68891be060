"""ShardCheckpoint: resume, set-aside, finalize, and survival of SIGKILL at random instants."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from virnuc_core.store import (
    PROGRESS_NAME,
    ROWS_NAME,
    ShardCheckpoint,
    read_embeddings,
    row_dtype,
)

ROOT = Path(__file__).resolve().parents[1]
DIM = 8
FP = '{"model": "esm", "seed": 0}'


def emb_of(records: np.ndarray, dim: int = DIM) -> np.ndarray:
    """Deterministic embedding of each record, so any stored row can be checked."""
    records = np.asarray(records, dtype=np.int64)
    return (records[:, None] * 1000.0 + np.arange(dim)[None, :]).astype(np.float32) / 7.0


def fill(ckpt: ShardCheckpoint, records) -> None:
    records = np.asarray(records, dtype=np.int64)
    ckpt.append(records, emb_of(records, ckpt.dim))


def test_fresh_resume_and_finalize(tmp_path):
    work = tmp_path / "work" / "shard_0.work"
    out = tmp_path / "out" / "shard_0.h5"
    order = np.random.default_rng(1).permutation(50)

    with ShardCheckpoint.open(work, FP, DIM) as ckpt:
        assert ckpt.committed_records().size == 0
        fill(ckpt, order[:10])
        fill(ckpt, order[10:20])
        assert ckpt.commit() == 20
        fill(ckpt, order[20:25])  # buffered, never committed
    assert not out.exists()

    with ShardCheckpoint.open(work, FP, DIM) as ckpt:
        assert ckpt.committed_records().tolist() == order[:20].tolist()
        with pytest.raises(ValueError, match="already committed"):
            fill(ckpt, order[19:22])
        fill(ckpt, order[20:50])
        assert not out.exists()
        ids = [f"seq{r}_é" for r in range(50)]
        ckpt.finalize(out, {"model": "esm", "token_budget": 1024, "compile": False, "x": 0.5}, ids)

    assert not work.exists()
    assert not list(out.parent.glob(".*part"))
    records, emb, attrs = read_embeddings(out)
    assert records.tolist() == list(range(50))
    np.testing.assert_array_equal(emb, emb_of(np.arange(50)))
    assert emb.dtype == np.float32 and records.dtype == np.int64
    assert attrs == {
        "model": "esm",
        "token_budget": 1024,
        "compile": False,
        "x": 0.5,
        "fingerprint": FP,
    }
    with h5py.File(out, "r") as h5:
        assert h5["ids"].asstr()[()].tolist() == ids


def test_fingerprint_mismatch_sets_aside(tmp_path, caplog):
    work = tmp_path / "shard_0.work"
    with ShardCheckpoint.open(work, FP, DIM) as ckpt:
        fill(ckpt, range(5))
        ckpt.commit()
    with caplog.at_level(logging.WARNING, logger="virnuc.store"):
        ckpt = ShardCheckpoint.open(work, FP.replace("esm", "dnabert"), DIM)
    assert ckpt.committed_records().size == 0
    ckpt.close()
    stale = list(tmp_path.glob("shard_0.work.stale-*"))
    assert len(stale) == 1
    assert json.loads((stale[0] / PROGRESS_NAME).read_text())["committed"] == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "settings differ" in warnings[0].getMessage()
    assert warnings[0].name == "virnuc.store"


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("dim", "dim differs"),
        ("progress", "unreadable progress"),
        ("short", "whole rows"),
        ("file", "not a work directory"),
    ],
)
def test_unusable_work_is_set_aside(tmp_path, caplog, damage, reason):
    work = tmp_path / "w"
    with ShardCheckpoint.open(work, FP, DIM) as ckpt:
        fill(ckpt, range(5))
        ckpt.commit()
    dim = DIM
    if damage == "dim":
        dim = DIM + 1
    elif damage == "progress":
        (work / PROGRESS_NAME).write_text('{"format": ')  # torn write
    elif damage == "short":
        os.truncate(work / ROWS_NAME, 3 * row_dtype(DIM).itemsize)
    elif damage == "file":
        import shutil

        shutil.rmtree(work)
        work.write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    with caplog.at_level(logging.WARNING, logger="virnuc.store"):
        ckpt = ShardCheckpoint.open(work, FP, dim)
    assert ckpt.committed_records().size == 0
    ckpt.close()
    assert reason in caplog.text
    assert len(list(tmp_path.glob("w.stale-*"))) == 1


def test_uncommitted_tail_is_dropped(tmp_path):
    """A commit killed after writing rows but before the progress update: rows are ignored."""
    work = tmp_path / "w"
    with ShardCheckpoint.open(work, FP, DIM) as ckpt:
        fill(ckpt, range(4))
        ckpt.commit()
    with open(work / ROWS_NAME, "ab") as fh:  # 2.5 rows that were never acknowledged
        fh.write(b"\x01" * int(2.5 * row_dtype(DIM).itemsize))
    (work / f".{PROGRESS_NAME}.tmp").write_text('{"committed": 99')  # torn temp file
    with ShardCheckpoint.open(work, FP, DIM) as ckpt:
        assert ckpt.committed_records().tolist() == [0, 1, 2, 3]
        fill(ckpt, [4, 5])
        ckpt.commit()
    with ShardCheckpoint.open(work, FP, DIM) as ckpt:
        rec, emb = ckpt.committed_rows()
    assert rec.tolist() == list(range(6))
    np.testing.assert_array_equal(emb, emb_of(np.arange(6)))


def test_failed_commit_can_be_retried(tmp_path, monkeypatch):
    """An I/O error inside commit() (after part of the rows reached the file) loses nothing."""
    import virnuc_core.store as store

    work = tmp_path / "w"
    ckpt = ShardCheckpoint.open(work, FP, DIM)
    fill(ckpt, range(3))
    ckpt.commit()
    fill(ckpt, range(3, 9))
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        ckpt.commit()
    monkeypatch.setattr(store.os, "fsync", real_fsync)
    assert ckpt.n_committed == 3 and ckpt.n_buffered == 6
    fill(ckpt, [9])
    ckpt.commit()
    ckpt.close()
    with ShardCheckpoint.open(work, FP, DIM) as again:
        rec, emb = again.committed_rows()
    assert rec.tolist() == list(range(10))
    np.testing.assert_array_equal(emb, emb_of(np.arange(10)))


def test_should_commit_and_single_writer(tmp_path):
    work = tmp_path / "w"
    ckpt = ShardCheckpoint.open(work, FP, DIM, every_records=5, every_seconds=0.2)
    assert not ckpt.should_commit()
    fill(ckpt, range(4))
    assert not ckpt.should_commit()
    fill(ckpt, [4])
    assert ckpt.should_commit()
    ckpt.commit()
    fill(ckpt, [5])
    assert not ckpt.should_commit()
    time.sleep(0.25)
    assert ckpt.should_commit()
    with pytest.raises(RuntimeError, match="another process"):
        ShardCheckpoint.open(work, FP, DIM)
    with pytest.raises(ValueError, match="within one append"):
        ckpt.append(np.array([7, 7]), emb_of(np.array([7, 7])))
    ckpt.close()


# --------------------------------------------------------------------------- SIGKILL test
WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from virnuc_core.store import ShardCheckpoint
    work, n, dim, seed, every = sys.argv[1], *map(int, sys.argv[2:6])
    order = np.random.default_rng(seed).permutation(n)
    sizes = np.random.default_rng(seed + 1).integers(1, 14, size=n)
    ckpt = ShardCheckpoint.open(work, "fp", dim, every_records=every, every_seconds=3600)
    done = set(ckpt.committed_records().tolist())
    todo = np.array([r for r in order if r not in done], dtype=np.int64)
    print("ready", len(done), flush=True)
    i = 0
    while i < todo.size:
        batch = todo[i : i + sizes[i]]
        i += batch.size
        emb = (batch[:, None] * 1000.0 + np.arange(dim)[None, :]).astype(np.float32) / 7.0
        ckpt.append(batch, emb)
        if ckpt.should_commit():
            ckpt.commit()
            print("committed", ckpt.n_committed, flush=True)
    ckpt.commit()
    print("committed", ckpt.n_committed, flush=True)
    if len(sys.argv) > 6:
        ckpt.finalize(sys.argv[6], {"n": n})
    print("done", flush=True)
    """
)


def _run_writer(work, n, dim, seed, every=17, out=None, kill_after=None):
    """Start the writer; SIGKILL it ``kill_after`` seconds after it is ready.

    Returns (start count, last acknowledged committed count, finished?).
    """
    cmd = [sys.executable, "-c", WRITER, str(work), str(n), str(dim), str(seed), str(every)]
    if out is not None:
        cmd.append(str(out))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    first = proc.stdout.readline().split()
    assert first and first[0] == "ready", first
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=60)
    lines = [ln.split() for ln in rest.splitlines(keepends=True) if ln.endswith("\n")]
    acked = max([int(ln[1]) for ln in lines if ln[0] == "committed"], default=int(first[1]))
    finished = any(ln[0] == "done" for ln in lines)
    if kill_after is None:
        assert proc.returncode == 0
    return int(first[1]), acked, finished


def test_sigkill_at_random_instants(tmp_path):
    n, dim, seed = 30000, 32, 7
    order = np.random.default_rng(seed).permutation(n)
    work = tmp_path / "killed.work"
    rng = random.Random(1234)
    prev = 0
    kills = torn = 0
    for _ in range(10):
        start, acked, finished = _run_writer(work, n, dim, seed, kill_after=rng.uniform(0, 0.1))
        assert start == prev  # the writer resumed from exactly what we saw committed
        if work.exists():  # a kill inside commit() leaves rows past the committed count
            committed = json.loads((work / PROGRESS_NAME).read_text())["committed"]
            row = row_dtype(dim).itemsize
            torn += (work / ROWS_NAME).stat().st_size > committed * row
        with ShardCheckpoint.open(work, "fp", dim) as ckpt:
            rec, emb = ckpt.committed_rows()
            in_order = ckpt.committed_records()
        # never loses an acknowledged commit; committed rows are a prefix of the write order
        assert in_order.size >= acked >= prev
        assert in_order.tolist() == order[: in_order.size].tolist()
        assert np.unique(rec).size == rec.size
        np.testing.assert_array_equal(emb, emb_of(rec, dim))
        prev = in_order.size
        kills += not finished
        if finished:
            break
    assert kills >= 3, "the writer finished too fast to be killed; make it slower"
    print(f"{kills} kills, {torn} inside a commit, {prev} of {n} rows committed before the end")
    assert not list(tmp_path.glob("*.stale-*"))  # no kill ever made the work unusable

    out_killed = tmp_path / "killed.h5"
    _run_writer(work, n, dim, seed, every=5000, out=out_killed)  # few commits: fsync is slow

    out_clean = tmp_path / "clean.h5"
    _run_writer(tmp_path / "clean.work", n, dim, seed, every=5000, out=out_clean)
    assert not work.exists()
    a, b = read_embeddings(out_killed), read_embeddings(out_clean)
    np.testing.assert_array_equal(a[0], np.arange(n))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
