"""A reads file that changes while it is read (still being written, or replaced) is refused,
never indexed up to wherever it ended (virnuc_core.data.reads, ChangedWhileReadError)."""

from __future__ import annotations

import gzip
import os
import pickle
import threading

import pytest

from virnuc_core.data import reads
from virnuc_core.data.index import index_sample
from virnuc_core.data.reads import ChangedWhileReadError, InputError, iter_read_batches, iter_reads

SEQ = "ACGTTGCAAGGCATCCATAATGAAACCCGGGTTTAGCTAGCTAAGG" * 11  # 506 bases
TAIL = "(no program still writing it) and run again"


def fasta(first: int, last: int) -> str:
    return "".join(f">r{i} d\n{SEQ[i % 7 :]}\n" for i in range(first, last))


def fastq(first: int, last: int) -> str:
    return "".join(
        f"@q{i}\n{SEQ[i % 7 :]}\n+\n{'I' * (len(SEQ) - i % 7)}\n" for i in range(first, last)
    )


def on_read(monkeypatch, when, action) -> None:
    """Run ``action`` once, on the first block read of the file for which ``when(data,
    failure)`` holds (``data``: the block, ``failure``: the read error, if any)."""
    real, done = reads._read_block, []

    def hook(stream, size):
        data, failure = real(stream, size)
        if not done and when(data, failure):
            done.append(action())
        return data, failure

    monkeypatch.setattr(reads, "_read_block", hook)


def at_eof(data, failure):
    return not data or failure is not None


def outputs(tmp_path) -> dict[str, str]:
    return {k: str(tmp_path / f"out.{k}") for k in ("frames", "proteins", "index", "counts")}


def test_a_file_written_after_the_reader_reached_its_end_is_refused(tmp_path, monkeypatch):
    """The writer slower than the reader: the file ends mid-sequence when it is read to its
    end, the rest comes after. Nothing is written."""
    path = tmp_path / "reads.fa"
    whole = fasta(0, 3000)
    cut = whole.index(">r2000") + 300  # inside the sequence of read r2000
    path.write_text(whole[:cut])
    with open(path, "a") as writer:
        on_read(monkeypatch, at_eof, lambda: writer.write(whole[cut:]) and writer.flush())
        with pytest.raises(ChangedWhileReadError) as err:
            index_sample([str(path)], 500, outputs(tmp_path))
    assert str(err.value) == (
        f"{str(path)!r} changed while it was read (size {cut:,} -> {len(whole):,} bytes): "
        f"wait until it is complete {TAIL}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reads.fa"]


def test_a_file_appended_to_while_it_is_read_is_refused(tmp_path, monkeypatch):
    """A writer thread appending records while the reads are read, in small blocks."""
    monkeypatch.setattr(reads, "_BLOCK_BYTES", 4096)
    path = tmp_path / "reads.fa"
    path.write_text(fasta(0, 200))
    size = path.stat().st_size
    started, stop = threading.Event(), threading.Event()

    def writer():
        with open(path, "a") as out:
            for i in range(200, 100_000):
                out.write(fasta(i, i + 1))
                out.flush()
                started.set()
                if stop.wait(0.001):
                    return

    thread = threading.Thread(target=writer)
    batches = iter_read_batches(path, batch_bases=2000)
    next(batches)  # the file is open, its size taken
    thread.start()
    try:
        started.wait(10)
        with pytest.raises(ChangedWhileReadError, match=rf"\(size {size:,} -> [\d,]+ bytes\)"):
            for _ in batches:
                pass
    finally:
        stop.set()
        thread.join()


def test_a_fastq_file_cut_inside_a_record_names_the_change_not_the_cut(tmp_path, monkeypatch):
    path = tmp_path / "reads.fq"
    whole = fastq(0, 500)
    cut = whole.index("@q400\n") + 520  # inside the quality line of q400
    path.write_text(whole[:cut])
    with open(path, "a") as writer:
        on_read(monkeypatch, at_eof, lambda: writer.write(whole[cut:]) and writer.flush())
        with pytest.raises(ChangedWhileReadError, match=r"\(size [\d,]+ -> [\d,]+ bytes\)"):
            list(iter_reads(path))
    monkeypatch.undo()
    assert len(list(iter_reads(path))) == 500  # once complete: read


def test_a_gzip_file_still_being_written_names_the_change(tmp_path, monkeypatch):
    path = tmp_path / "reads.fa.gz"
    data = gzip.compress(fasta(0, 2000).encode())
    path.write_bytes(data[: len(data) // 2])
    with open(path, "ab") as writer:
        on_read(monkeypatch, at_eof, lambda: writer.write(data[len(data) // 2 :]) and None)
        with pytest.raises(ChangedWhileReadError) as err:
            list(iter_reads(path))
    assert f"(size {len(data) // 2:,} -> {len(data):,} bytes)" in str(err.value)
    assert isinstance(err.value.__context__, InputError)  # what the cut alone would say
    assert "cannot read the file" in str(err.value.__context__)


def test_a_file_replaced_while_it_is_read_is_refused(tmp_path, monkeypatch):
    """cp/rsync writing a new file and renaming it over the path: the reader still holds the
    old one, complete, but it is no longer the file named."""
    path, new = tmp_path / "reads.fa", tmp_path / "new.fa"
    path.write_text(fasta(0, 300))
    new.write_text(fasta(1000, 1100))
    on_read(monkeypatch, lambda *_: True, lambda: os.replace(new, path))
    with pytest.raises(ChangedWhileReadError) as err:
        list(iter_reads(path))
    size = path.stat().st_size
    assert f"changed while it was read (replaced by another file of {size:,} bytes)" in str(
        err.value
    )


def test_a_file_rewritten_in_place_with_the_same_size_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "reads.fa"
    path.write_text(fasta(0, 300))
    st = path.stat()

    def rewrite():
        with open(path, "r+b") as f:
            f.seek(st.st_size - 10)
            f.write(b"A")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    on_read(monkeypatch, lambda *_: True, rewrite)
    with pytest.raises(ChangedWhileReadError, match=r"\(modified in place, same size\)"):
        list(iter_reads(path))


def test_an_unchanged_file_and_a_pipe_are_read(tmp_path):
    path = tmp_path / "reads.fa"
    path.write_text(fasta(0, 50))
    assert len(list(iter_reads(path))) == 50
    fifo = tmp_path / "pipe.fa"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_text(fasta(0, 50)))
    feeder.start()
    try:
        assert [r.id for r in iter_reads(fifo)] == [f"r{i}" for i in range(50)]
    finally:
        feeder.join()


def test_the_error_survives_pickling(tmp_path):
    err = ChangedWhileReadError(tmp_path / "x.fa", "size 1 -> 2 bytes")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ChangedWhileReadError and str(back) == str(err)
    assert isinstance(back, ValueError) and back.path == str(tmp_path / "x.fa")
