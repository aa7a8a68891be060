"""ShardCheckpoint and ShardRows: resume, set-aside, checksums, the order of durable steps, and
survival of SIGKILL at random instants."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from virnuc_core.jobs import store
from virnuc_core.jobs.shard_rows import ShardRows
from virnuc_core.jobs.store import (
    BLOCKS_NAME,
    META_NAME,
    PROGRESS_NAME,
    ROWS_NAME,
    CorruptRows,
    ShardCheckpoint,
    row_dtype,
)

ROOT = Path(__file__).resolve().parents[1]
DIM = 8
FP = '{"model": "esm", "seed": 0}'
LO, HI = 100, 150  # the shard's record range


def emb_of(records: np.ndarray, dim: int = DIM) -> np.ndarray:
    """Deterministic embedding of each record, so any stored row can be checked."""
    records = np.asarray(records, dtype=np.int64)
    return (records[:, None] * 1000.0 + np.arange(dim)[None, :]).astype(np.float32) / 7.0


def fill(ckpt: ShardCheckpoint, records) -> None:
    records = np.asarray(records, dtype=np.int64)
    ckpt.append(records, emb_of(records, ckpt.dim))


def on_disk(work: Path, dim: int = DIM) -> np.ndarray:
    """The committed rows of a work directory, read plainly (commit order)."""
    count = json.loads((work / PROGRESS_NAME).read_text())["rows"]
    return np.fromfile(work / ROWS_NAME, dtype=row_dtype(dim), count=count)


def open_ckpt(work, fp=FP, dim=DIM, lo=LO, hi=HI, **kw) -> ShardCheckpoint:
    return ShardCheckpoint.open(work, fp, dim, lo, hi, **kw)


def test_fresh_resume_and_complete(tmp_path, caplog):
    work = tmp_path / "work" / "shard_0"
    out = tmp_path / "out" / "shard_0.rows"
    order = LO + np.random.default_rng(1).permutation(HI - LO)
    with open_ckpt(work) as ckpt:
        assert ckpt.pending(order).tolist() == order.tolist()
        fill(ckpt, order[:10])
        fill(ckpt, order[10:20])
        assert ckpt.commit() == 20
        fill(ckpt, order[20:25])  # buffered, never committed
    (tmp_path / "work" / "shard_0.stale-20260101T000000").mkdir()  # set aside earlier
    with open_ckpt(work) as ckpt:
        assert sorted(ckpt.pending(order).tolist()) == sorted(order[20:].tolist())
        with pytest.raises(ValueError, match="already committed"):
            fill(ckpt, order[19:22])
        with pytest.raises(ValueError, match="outside the shard"):
            fill(ckpt, [HI])
        fill(ckpt, order[20:])
        with caplog.at_level(logging.INFO, logger="virnuc.store"):
            ckpt.complete(out, {"attrs": {"model": "esm"}, "metrics": {"wall_s": 1.5}})
    assert not work.exists() and "deleted 1 set-aside work folder" in caplog.text
    assert not list((tmp_path / "work").iterdir())
    rows = ShardRows(out)
    pos = rows.positions()
    assert (pos >= 0).all() and rows.meta["metrics"] == {"wall_s": 1.5}
    want = np.arange(LO, HI)
    np.testing.assert_array_equal(rows.gather(pos), emb_of(want))
    pick = np.array([7, 3, 3, 49, 0])  # any order, repeats allowed
    np.testing.assert_array_equal(rows.gather(pos[pick]), emb_of(want[pick]))


def test_keep_stale_keeps_set_aside_work(tmp_path):
    work = tmp_path / "w"
    with open_ckpt(work) as ckpt:
        fill(ckpt, [LO])
        ckpt.commit()
    ckpt = open_ckpt(work, fp="other", keep_stale=True)
    ckpt.complete(tmp_path / "out", {"attrs": {}})
    assert len(list(tmp_path.glob("w.stale-*"))) == 1


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"fp": "other"}, "fingerprint differs"),
        ({"dim": DIM + 1}, "dim differs"),
        ({"lo": LO + 1}, "lo differs"),
        ({"hi": HI + 5}, "hi differs"),
    ],
)
def test_other_inputs_set_the_work_aside(tmp_path, caplog, change, reason):
    work = tmp_path / "shard_0"
    with open_ckpt(work) as ckpt:
        fill(ckpt, range(LO, LO + 5))
        ckpt.commit()
    with caplog.at_level(logging.WARNING, logger="virnuc.store"):
        ckpt = open_ckpt(work, **change)
    assert ckpt.n_committed == 0
    ckpt.close()
    stale = list(tmp_path.glob("shard_0.stale-*"))
    assert len(stale) == 1 and json.loads((stale[0] / PROGRESS_NAME).read_text())["rows"] == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    assert warnings[0].name == "virnuc.store"


def _damage(work: Path, how: str) -> None:
    item = row_dtype(DIM).itemsize
    if how == "progress":
        (work / PROGRESS_NAME).write_text('{"format": ')  # torn write
    elif how == "short":
        os.truncate(work / ROWS_NAME, 3 * item)
    elif how == "blocks":
        os.truncate(work / BLOCKS_NAME, 10)
    elif how == "file":
        shutil.rmtree(work)
        work.write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    elif how in ("zeroed", "altered"):  # same size, changed in place
        with open(work / ROWS_NAME, "r+b") as fh:
            fh.seek(item * 2 + 8 + (0 if how == "zeroed" else 4 * 3))
            fh.write(b"\0" * (4 * DIM) if how == "zeroed" else np.float32(1.25).tobytes())


@pytest.mark.parametrize(
    "how, reason",
    [
        ("progress", "unreadable progress"),
        ("short", "ends inside block"),
        ("blocks", "does not account"),
        ("file", "not a work directory"),
        ("zeroed", "does not match its checksum"),
        ("altered", "does not match its checksum"),
    ],
)
def test_unusable_work_is_set_aside(tmp_path, caplog, how, reason):
    work = tmp_path / "w"
    with open_ckpt(work) as ckpt:
        fill(ckpt, range(LO, LO + 5))
        ckpt.commit()
    _damage(work, how)
    with caplog.at_level(logging.WARNING, logger="virnuc.store"):
        ckpt = open_ckpt(work)
    assert ckpt.n_committed == 0
    ckpt.close()
    assert reason in caplog.text
    assert len(list(tmp_path.glob("w.stale-*"))) == 1


@pytest.mark.parametrize("how", ["zeroed", "altered"])
def test_a_changed_finished_row_is_never_used(tmp_path, how):
    work, out = tmp_path / "w", tmp_path / "shard_0.rows"
    with open_ckpt(work) as ckpt:
        fill(ckpt, range(LO, LO + 4))
        ckpt.commit()
        fill(ckpt, range(LO + 4, HI))
        ckpt.complete(out, {"attrs": {}})
    _damage(out, how)
    with pytest.raises(CorruptRows, match=r"rows\.bin: block 0 of rows\.bin does not match"):
        ShardRows(out).positions()


def test_uncommitted_tail_is_dropped(tmp_path):
    """A commit killed after writing rows but before the progress update: rows are ignored."""
    work = tmp_path / "w"
    with open_ckpt(work) as ckpt:
        fill(ckpt, range(LO, LO + 4))
        ckpt.commit()
    with open(work / ROWS_NAME, "ab") as fh:  # 2.5 rows that were never acknowledged
        fh.write(b"\x01" * int(2.5 * row_dtype(DIM).itemsize))
    with open(work / BLOCKS_NAME, "ab") as fh:
        fh.write(b"\x02" * 17)
    (work / f".{PROGRESS_NAME}.tmp").write_text('{"rows": 99')  # torn temp file
    with open_ckpt(work) as ckpt:
        assert ckpt.n_committed == 4
        fill(ckpt, [LO + 4, LO + 5])
        ckpt.commit()
    rows = on_disk(work)
    assert rows["record"].tolist() == list(range(LO, LO + 6))
    np.testing.assert_array_equal(rows["embedding"], emb_of(np.arange(LO, LO + 6)))


def test_failed_commit_can_be_retried(tmp_path, monkeypatch):
    """An I/O error inside commit() (after part of the rows reached the file) loses nothing."""
    work = tmp_path / "w"
    ckpt = open_ckpt(work)
    fill(ckpt, range(LO, LO + 3))
    ckpt.commit()
    fill(ckpt, range(LO + 3, LO + 9))
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        ckpt.commit()
    monkeypatch.setattr(store.os, "fsync", real_fsync)
    assert ckpt.n_committed == 3 and ckpt.n_buffered == 6
    fill(ckpt, [LO + 9])
    ckpt.commit()
    ckpt.close()
    with open_ckpt(work) as again:  # resumes: checksums of both blocks verified
        assert again.n_committed == 10
    assert sorted(on_disk(work)["record"].tolist()) == list(range(LO, LO + 10))


def test_durable_steps_come_in_order(tmp_path, monkeypatch):
    """rows fsync'd, then their checksum fsync'd, and only then progress.json replaced."""
    work = tmp_path / "w"
    ckpt = open_ckpt(work)
    fill(ckpt, range(LO, LO + 3))
    events: list[str] = []
    names = {ckpt._fds[0]: "fsync rows", ckpt._fds[1]: "fsync blocks"}
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(names.get(fd, "fsync other"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(f"replace {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(store.os, "fsync", fsync)
    monkeypatch.setattr(store.os, "replace", replace)
    ckpt.commit()
    ckpt.close()
    assert events.index("fsync rows") < events.index("fsync blocks")
    assert events.index("fsync blocks") < events.index(f"replace {PROGRESS_NAME}")
    # the progress file itself is fsync'd before it replaces the old one
    assert events[events.index("fsync blocks") + 1] == "fsync other"


def test_should_commit_and_single_writer(tmp_path):
    work = tmp_path / "w"
    ckpt = open_ckpt(work, every_records=5, every_seconds=0.2)
    assert not ckpt.should_commit()
    fill(ckpt, range(LO, LO + 4))
    assert not ckpt.should_commit()
    fill(ckpt, [LO + 4])
    assert ckpt.should_commit()
    ckpt.commit()
    fill(ckpt, [LO + 5])
    assert not ckpt.should_commit()
    time.sleep(0.25)
    assert ckpt.should_commit()
    with pytest.raises(RuntimeError, match="another process"):
        open_ckpt(work)
    with pytest.raises(ValueError, match="within one append"):
        ckpt.append(np.array([LO + 7, LO + 7]), emb_of(np.array([7, 7])))
    ckpt.close()


def test_commit_costs_only_its_own_rows(tmp_path, monkeypatch):
    """A commit writes its rows and one checksum entry: never the rows before it again."""
    work = tmp_path / "w"
    ckpt = open_ckpt(work, lo=0, hi=10_000)
    written = []
    real = store._write_at
    monkeypatch.setattr(
        store, "_write_at", lambda fd, d, o: (written.append(len(d)), real(fd, d, o))
    )
    for start in range(0, 10_000, 500):
        fill(ckpt, range(start, start + 500))
        ckpt.commit()
    ckpt.close()
    item = row_dtype(DIM).itemsize
    rows = [n for n in written if n % item == 0 and n >= item]
    assert rows and max(rows) == 500 * item  # progress.json writes are small and constant
    assert max(n for n in written if n not in rows) < 400


# --------------------------------------------------------------------------- SIGKILL test
WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from virnuc_core.jobs.store import ShardCheckpoint
    work, n, dim, seed, every = sys.argv[1], *map(int, sys.argv[2:6])
    order = np.random.default_rng(seed).permutation(n)
    sizes = np.random.default_rng(seed + 1).integers(1, 14, size=n)
    ckpt = ShardCheckpoint.open(work, "fp", dim, 0, n, every_records=every, every_seconds=3600)
    todo = order[np.isin(order, ckpt.pending(order))]
    print("ready", ckpt.n_committed, flush=True)
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
        ckpt.complete(sys.argv[6], {"attrs": {"n": n}})
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
            committed = json.loads((work / PROGRESS_NAME).read_text())["rows"]
            torn += (work / ROWS_NAME).stat().st_size > committed * row_dtype(dim).itemsize
        with ShardCheckpoint.open(work, "fp", dim, 0, n) as ckpt:  # verifies every checksum
            assert ckpt.n_committed >= acked >= prev
        rows = on_disk(work, dim)
        # never loses an acknowledged commit; committed rows are a prefix of the write order
        assert rows["record"].tolist() == order[: rows.size].tolist()
        np.testing.assert_array_equal(rows["embedding"], emb_of(rows["record"], dim))
        prev = rows.size
        kills += not finished
        if finished:
            break
    assert kills >= 3, "the writer finished too fast to be killed; make it slower"
    print(f"{kills} kills, {torn} inside a commit, {prev} of {n} rows committed before the end")
    assert not list(tmp_path.glob("*.stale-*"))  # no kill ever made the work unusable

    out_killed = tmp_path / "killed.rows"
    _run_writer(work, n, dim, seed, every=5000, out=out_killed)  # few commits: fsync is slow
    out_clean = tmp_path / "clean.rows"
    _run_writer(tmp_path / "clean.work", n, dim, seed, every=5000, out=out_clean)
    assert not work.exists()
    a, b = ShardRows(out_killed), ShardRows(out_clean)
    np.testing.assert_array_equal(a.gather(a.positions()), b.gather(b.positions()))
    assert json.loads((out_killed / META_NAME).read_text()) == {"attrs": {"n": n}}


def test_a_checksum_ending_in_nul_bytes_still_matches(tmp_path):
    """One block in 256 has a sha256 that ends in a NUL byte: it must verify like any other."""
    import hashlib

    row = np.zeros(1, row_dtype(DIM))
    for value in range(100_000):  # find a row whose block digest ends in b"\0"
        row["record"], row["embedding"] = LO, float(value)
        if hashlib.sha256(row.tobytes()).digest()[-1] == 0:
            break
    work = tmp_path / "w"
    with open_ckpt(work) as ckpt:
        ckpt.append(row["record"], row["embedding"])
        ckpt.commit()
    with open_ckpt(work) as ckpt:  # resumed, not set aside
        assert ckpt.n_committed == 1
        fill(ckpt, range(LO + 1, HI))
        ckpt.complete(tmp_path / "out.rows", {"attrs": {}})
    assert (ShardRows(tmp_path / "out.rows").positions() >= 0).all()
    assert not list(tmp_path.glob("w.stale-*"))


def _renumber_last_row(work: Path, record: int) -> None:
    """Give the last row of a one-block ``rows.bin`` another record number, with a matching
    checksum (as a writer with a wrong range would have committed it)."""
    import hashlib

    rows = np.fromfile(work / ROWS_NAME, dtype=row_dtype(DIM))
    rows["record"][-1] = record
    rows.tofile(work / ROWS_NAME)
    blocks = np.fromfile(work / BLOCKS_NAME, dtype=store.BLOCK_DTYPE)
    assert blocks.size == 1
    blocks["sha256"][0] = np.frombuffer(hashlib.sha256(rows.tobytes()).digest(), np.uint8)
    blocks.tofile(work / BLOCKS_NAME)


@pytest.mark.parametrize("record", [HI, LO - 1], ids=["upper_bound", "below_lo"])
def test_a_block_holding_a_record_outside_the_range_is_set_aside(tmp_path, caplog, record):
    work = tmp_path / "w"
    with open_ckpt(work) as ckpt:
        fill(ckpt, range(LO, LO + 3))
        ckpt.commit()
    _renumber_last_row(work, record)
    with caplog.at_level(logging.WARNING, logger="virnuc.store"):
        ckpt = open_ckpt(work)
    assert ckpt.n_committed == 0 and ckpt.pending([LO, LO + 2]).tolist() == [LO, LO + 2]
    ckpt.close()
    assert f"block 0 holds records outside the shard's range {LO}..{HI - 1}" in caplog.text
    assert len(list(tmp_path.glob("w.stale-*"))) == 1
    # a finished rows directory holding it is refused, naming the file
    with open_ckpt(tmp_path / "v") as ckpt:
        fill(ckpt, range(LO, HI))
        ckpt.complete(tmp_path / "out.rows", {"attrs": {}})
    _renumber_last_row(tmp_path / "out.rows", record)
    with pytest.raises(CorruptRows, match=r"out\.rows/rows\.bin: block 0 holds records outside"):
        ShardRows(tmp_path / "out.rows").positions()


def test_blocks_accounting_for_fewer_rows_than_progress_are_set_aside(tmp_path, caplog):
    """progress.json counts 5 rows but its one block entry only 3: the work is set aside at
    resume, and the shard then completes into rows a finalize accepts."""
    work = tmp_path / "w"
    with open_ckpt(work) as ckpt:
        fill(ckpt, range(LO, LO + 3))
        ckpt.commit()
        fill(ckpt, range(LO + 3, LO + 5))
        ckpt.commit()
    progress = json.loads((work / PROGRESS_NAME).read_text())
    assert (progress["rows"], progress["blocks"]) == (5, 2)
    (work / PROGRESS_NAME).write_text(json.dumps({**progress, "blocks": 1}))
    with caplog.at_level(logging.WARNING, logger="virnuc.store"):
        ckpt = open_ckpt(work)
    assert ckpt.n_committed == 0
    assert f"{BLOCKS_NAME} does not account for the 5 committed rows" in caplog.text
    assert len(list(tmp_path.glob("w.stale-*"))) == 1
    fill(ckpt, ckpt.pending(np.arange(LO, HI)))
    ckpt.complete(tmp_path / "out.rows", {"attrs": {}})
    rows = ShardRows(tmp_path / "out.rows")
    np.testing.assert_array_equal(rows.gather(rows.positions()), emb_of(np.arange(LO, HI)))
