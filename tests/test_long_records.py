"""Long FASTA records (contigs, chromosomes) go to disk while they are read: the reads, their
lines and the errors are those of the file, the index is the same, and memory stays bounded.

Most tests make a "long" record long by lowering the spill threshold and the block size, so that
the disk path and its piece boundaries are exercised on small files; the expectations are the
sequences and line numbers the test wrote.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.index_helpers import frames_index
from tests.test_report import expected_summary
from virnuc_core.data import long_records, reads, records
from virnuc_core.data.index import index_sample
from virnuc_core.data.reads import InputError, iter_reads
from virnuc_core.report import summary
from virnuc_core.report.predictions import write_predictions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_spill(monkeypatch):
    """Records over 300 bytes go to disk; files are read 64 bytes at a time."""
    monkeypatch.setattr(long_records, "SPILL_BYTES", 300)
    monkeypatch.setattr(reads, "_BLOCK_BYTES", 64)
    monkeypatch.setattr(records, "_BLOCK_BYTES", 64)  # long records read in blocks too


def _bases(n: int, seed: int) -> str:
    return np.random.default_rng(seed).choice(list("ACGTacgtN"), n).astype(object).sum()


def _write(path: Path, records: list[tuple[str, list[str]]], eol: str = "\n") -> list[int]:
    """Write records given as (header, lines); return each header's line number."""
    heads, text, line = [], [], 1
    for header, lines in records:
        heads.append(line)
        text += [header, *lines]
        line += 1 + len(lines)
    path.write_bytes(eol.join(text).encode() + eol.encode())
    return heads


def _wrap(seq: str, width: int) -> list[str]:
    return [seq[i : i + width] for i in range(0, len(seq), width)]


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_long_records_read_as_written(tmp_path, small_spill, eol):
    long1, long2, short = _bases(1000, 1), _bases(777, 2), _bases(50, 3)
    body1 = _wrap(long1, 60)
    body1[3:3] = ["", "   "]  # blank lines inside a record
    body1[7] = "  " + body1[7] + "\t"  # spaces and tabs around a line
    records = [
        (">s1 first", [short]),
        (">chr1 a long one", body1),
        (">s2", [short[::-1]]),
        (">chr2", _wrap(long2, 70)),  # the file ends inside it
    ]
    heads = _write(tmp_path / "in.fa", records, eol)
    got = list(iter_reads(tmp_path / "in.fa"))
    assert [(r.id, str(r.seq), r.line) for r in got] == [
        ("s1", short, heads[0]),
        ("chr1", long1, heads[1]),
        ("s2", short[::-1], heads[2]),
        ("chr2", long2, heads[3]),
    ]
    assert [type(r.seq).__name__ for r in got] == ["str", "SpilledSeq", "str", "SpilledSeq"]
    assert got[1].seq[995:1005] == long1[995:] and got[1].seq[10:20] == long1[10:20]


def test_a_header_after_spaces_ends_a_long_record(tmp_path, small_spill):
    long1 = _bases(900, 4)
    heads = _write(tmp_path / "in.fa", [(">a", _wrap(long1, 50)), ("  >b", ["ACGT"])])
    got = [(r.id, str(r.seq), r.line) for r in iter_reads(tmp_path / "in.fa")]
    assert got == [("a", long1, heads[0]), ("b", "ACGT", heads[1])]


@pytest.mark.parametrize(
    "line, column, bad, problem",
    [
        ("ACGTAC*GT", 7, "*", "'*' at column 7 is not an IUPAC nucleotide code"),
        ("ACG\rTAC", 4, "\r", "a CR without LF at column 4"),
    ],
)
def test_a_bad_line_deep_in_a_long_record_is_named(tmp_path, small_spill, line, column, bad,
                                                   problem):  # fmt: skip
    body = _wrap(_bases(1200, 5), 60)
    body[15] = line  # line 4 + 15 of the file (the body starts at line 4), past the threshold
    _write(tmp_path / "in.fa", [(">ok", ["ACGT"]), (">chrX big", body)])
    with pytest.raises(InputError) as err:
        list(iter_reads(tmp_path / "in.fa"))
    assert (err.value.line, err.value.record) == (4 + 15, "chrX")
    assert problem in err.value.problem


def test_a_long_record_without_bases_is_refused(tmp_path, small_spill):
    (tmp_path / "in.fa").write_text(">empty\n" + "\n" * 2000 + ">b\nACGT\n")  # spilled
    with pytest.raises(InputError, match=r"line 1, record 'empty': record has no sequence"):
        list(iter_reads(tmp_path / "in.fa"))


def test_index_of_a_long_record_is_the_same_from_disk(tmp_path, monkeypatch):
    body = _wrap(_bases(25_000, 6).upper(), 80)
    _write(tmp_path / "in.fa", [(">r0", ["ACGTACGTTAG"]), (">chr", body), (">r2", ["GGCATG"])])

    def index(name: str) -> dict[str, bytes]:
        out = {k: str(tmp_path / f"{name}.{k}") for k in ("frames", "proteins", "index", "counts")}
        index_sample([str(tmp_path / "in.fa")], 500, out)
        return {k: Path(v).read_bytes() for k, v in out.items()}

    in_memory = index("memory")
    monkeypatch.setattr(long_records, "SPILL_BYTES", 4096)
    monkeypatch.setattr(reads, "_BLOCK_BYTES", 1000)
    monkeypatch.setattr(records, "_BLOCK_BYTES", 1000)  # long records read in blocks too
    spilled = []
    real = long_records.spill_record
    monkeypatch.setattr(long_records, "spill_record", lambda *a: spilled.append(1) or real(*a))
    assert index("disk") == in_memory
    assert spilled == [1]


def test_summary_of_a_long_record_holds_no_row_per_chunk(tmp_path, small_spill, monkeypatch):
    # A 2-megabase read, one prediction row per chunk (4,000 rows): the rows are tallied as they
    # stream by, and the read's bases are on disk. Before, the read's chunk ids and its rows
    # were held at once (well over 1 MB here).
    monkeypatch.setattr(reads, "_BLOCK_BYTES", 4096)
    monkeypatch.setattr(records, "_BLOCK_BYTES", 4096)  # long records read in blocks too
    n, chunks = 2_000_000, 4000
    fasta = tmp_path / "reads.fa"
    _write(fasta, [(">big", _wrap("ACGT" * (n // 4), 60)), (">small", ["ACGTT"])])
    ids = [f"big_chunk_{k}F1" for k in range(1, chunks + 1)] + ["small_chunk_1R1"]
    scores = np.random.default_rng(0).random((len(ids), 2)).astype(np.float32)
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    write_predictions(ids, scores, pred, high)
    index = frames_index(fasta, pred, 500)
    # the frames index is read a fixed block at a time; a small block here, so that the bound
    # below still tells a read's rows held (4,000 index rows fit in one block of the default)
    monkeypatch.setattr(summary, "INDEX_BLOCK", 512)
    tracemalloc.start()
    try:
        rows = [s.row() for _, s in summary.summarize_reads(fasta, 500, pred, high, index)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == expected_summary(fasta, 500, pred, high)
    assert peak < 400_000, peak


def test_summary_refuses_rows_out_of_chunk_order(tmp_path):
    fasta = tmp_path / "reads.fa"
    fasta.write_text(">x\n" + "A" * 1200 + "\n")
    ids = ["x_chunk_2F1", "x_chunk_1F1"]
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    write_predictions(ids, np.array([[0.5, 0.5], [0.4, 0.6]], np.float32), pred, high)
    with pytest.raises(summary.SummaryError, match="'x_chunk_1F1' comes after chunk 2"):
        list(summary.summarize_reads(fasta, 500, pred, high, frames_index(fasta, pred, 500)))


PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    from virnuc_core.data.index import index_sample
    with open("/proc/self/status") as status:
        before = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    path, out = sys.argv[1], sys.argv[2]
    index_sample([path], 500, {k: f"{out}.{k}" for k in ("frames", "proteins", "index", "counts")})
    with open("/proc/self/status") as status:
        peak = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    print(before // 1024, peak // 1024)
    """
)


def test_index_memory_on_a_16_megabase_record_is_bounded(tmp_path):
    # The whole record as text cost about 150 MB here (the block, its joined lines, the string);
    # streamed to disk it costs about a block over the interpreter and numpy.
    bases = np.frombuffer(b"ACGT", np.uint8)[np.random.default_rng(0).integers(0, 4, 16_000_000)]
    with open(tmp_path / "chr.fa", "wb") as f:
        f.write(b">chr1 16 megabases\n")
        f.write(b"\n".join(bases.view("S80").tolist()) + b"\n")
    del bases
    run = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "chr.fa"), str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    before, peak = map(int, run.stdout.split())
    assert peak - before < 60, run.stdout


def test_a_long_rna_record_gives_the_frames_of_its_dna_spelling(tmp_path, monkeypatch):
    """U is read as T in a record read through disk too, counted and warned as RNA; a long
    record holding both T and U is refused, naming it and where each letter first is."""
    dna = _bases(25_000, 7).upper()
    rna = dna.replace("T", "U")
    for name, seq in (("dna", dna), ("rna", rna)):
        _write(tmp_path / f"{name}.fa", [(">r0", ["ACGTACGTTAG"]), (">chr", _wrap(seq, 80))])
    monkeypatch.setattr(long_records, "SPILL_BYTES", 4096)
    monkeypatch.setattr(reads, "_BLOCK_BYTES", 1000)
    monkeypatch.setattr(records, "_BLOCK_BYTES", 1000)  # long records read in blocks too

    def index(name: str) -> dict[str, bytes]:
        out = {k: str(tmp_path / f"{name}.{k}") for k in ("frames", "proteins", "index", "counts")}
        index_sample([str(tmp_path / f"{name}.fa")], 500, out)
        return {k: Path(v).read_bytes() for k, v in out.items() if k != "counts"}

    assert index("rna") == index("dna")
    counts = (tmp_path / "rna.counts").read_text()
    assert '"rna_reads": 1' in counts and '"rna_files": 1' in counts
    mixed = dna[:20_000] + rna[20_000:]  # T throughout its first 20,000 bases, U after
    _write(tmp_path / "mixed.fa", [(">chr", _wrap(mixed, 80))])
    t, u = dna.index("T") + 1, 20_000 + rna[20_000:].index("U") + 1
    both = rf"record 'chr': the sequence holds both T \(first at base {t}\) and U \(first at base"
    with pytest.raises(InputError, match=rf"{both} {u}\)"):
        list(iter_reads(tmp_path / "mixed.fa"))
