"""Reading a sample's reads (virnuc_core.data.reads): formats, compression, several files, errors,
duplicate ids, batches; checked against Biopython on generated files."""

from __future__ import annotations

import bz2
import gzip
import lzma
import pickle
import string
import tracemalloc
from unittest import mock

import numpy as np
import pytest
from Bio import SeqIO
from Bio.SeqIO.FastaIO import SimpleFastaParser
from Bio.SeqIO.QualityIO import FastqGeneralIterator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virnuc_core.data import read_ids, reads
from virnuc_core.data.frames import select_frames
from virnuc_core.data.reads import InputError, iter_read_batches, iter_reads, sniff

COMPRESS = {
    "plain": lambda data: data,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}
BOM = "\ufeff"


def write(path, text, compression="plain"):
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(COMPRESS[compression](data))
    return path


def triples(paths, **kw):
    return [(r.id, r.seq, r.line) for r in iter_reads(paths, **kw)]


def quality(seq: str) -> str:
    """A quality string as long as ``seq``, with '@' and '+' in it (they may start a line)."""
    return "".join(chr(33 + (ord(c) * 7 + i) % 94) for i, c in enumerate(seq))


# -- generated files against Biopython -------------------------------------------------------

IDS = st.text(string.ascii_letters + string.digits + "_.:-|/éñü", min_size=1, max_size=12)
SEQS = st.text("ACGTNacgtnRYKMSWBDHVU", min_size=1, max_size=150)
DESCRIPTIONS = st.one_of(st.just(""), st.text(string.ascii_letters + " \t=:;,é", max_size=12))
RECORDS = st.lists(
    st.tuples(IDS, SEQS, DESCRIPTIONS), min_size=1, max_size=25, unique_by=lambda r: r[0]
)


@st.composite
def fasta_text(draw, records):
    width = draw(st.one_of(st.none(), st.integers(1, 80)))
    blank = draw(st.booleans())
    out = ["\n"] * draw(st.integers(0, 2))
    for rid, seq, desc in records:
        out.append(f">{rid}{' ' + desc if desc else ''}\n")
        step = width or len(seq)
        for i in range(0, len(seq), step):
            out.append(seq[i : i + step] + "\n")
            if blank and draw(st.booleans()):
                out.append("\n")
    return "".join(out)


@st.composite
def fastq_text(draw, records, id_only_plus=False):
    """4-line FASTQ; the '+' lines bare or repeating the header (or only its id, which
    Biopython refuses)."""
    out = []
    for rid, seq, desc in records:
        title = f"{rid}{' ' + desc if desc else ''}"
        plus = draw(st.sampled_from(["", title, rid] if id_only_plus else ["", title]))
        out.append(f"@{title}\n{seq}\n+{plus}\n{quality(seq)}\n")
    return "".join(out) + "\n" * draw(st.integers(0, 2))


def biopython(path, fmt):
    """(id, sequence) of a plain file read by Biopython (ids cut at the first whitespace).

    SeqIO.parse(..., "fasta") refuses blank lines before the first record, which we accept:
    SimpleFastaParser, which skips them, is used then."""
    with open(path, encoding="utf-8") as handle:
        if fmt == "fastq":
            return [(t.split(None, 1)[0], s) for t, s, _ in FastqGeneralIterator(handle)]
        if handle.read(1) == ">":
            handle.seek(0)
            return [(r.id, str(r.seq)) for r in SeqIO.parse(handle, "fasta")]
        handle.seek(0)
        return [(t.split(None, 1)[0], s) for t, s in SimpleFastaParser(handle)]


@st.composite
def samples(draw):
    """1-3 files of one sample: each FASTA or FASTQ, its own layout, line ends, compression."""
    records = draw(RECORDS)
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=2)))
    files = []
    for part in np.split(np.arange(len(records)), cuts):
        chunk = [records[i] for i in part]
        if not chunk:
            continue
        fmt = draw(st.sampled_from(["fasta", "fastq"]))
        text = draw(fasta_text(chunk) if fmt == "fasta" else fastq_text(chunk))
        files.append(
            dict(
                records=chunk,
                fmt=fmt,
                text=text,
                crlf=draw(st.booleans()),
                bom=draw(st.booleans()),
                compression=draw(st.sampled_from(list(COMPRESS))),
            )
        )
    return files


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sample=samples(), block=st.sampled_from([5, 64, 1 << 20]))
def test_matches_biopython_and_the_records(tmp_path_factory, sample, block):
    tmp = tmp_path_factory.mktemp("sample")
    paths, want = [], []
    for k, f in enumerate(sample):
        text = f["text"].replace("\n", "\r\n") if f["crlf"] else f["text"]
        plain = write(tmp / f"plain{k}.txt", text)
        ref = biopython(plain, f["fmt"])
        assert ref == [(rid, seq) for rid, seq, _ in f["records"]]  # the generator is right
        paths.append(write(tmp / f"in{k}.dat", (BOM if f["bom"] else "") + text, f["compression"]))
        assert sniff(paths[-1]) == (f["compression"], f["fmt"])
        want += [(rid, seq, str(paths[-1])) for rid, seq in ref]
    with mock.patch.object(reads, "_BLOCK_BYTES", block):
        got = [(r.id, r.seq, r.path) for r in iter_reads(paths)]
        batches = list(iter_read_batches(paths, batch_bases=100))
    assert got == want
    assert [i for b in batches for i in b.ids] == [w[0] for w in want]
    assert [b.first for b in batches] == np.cumsum([0] + [len(b) for b in batches[:-1]]).tolist()


def test_matches_biopython_on_golden_input(golden_dir):
    ours = [(r.id, r.seq) for r in iter_reads(golden_dir / "input.fa")]
    assert ours == biopython(golden_dir / "input.fa", "fasta")
    assert len(ours) == 200


def test_header_lines_are_reported(tmp_path):
    text = "\n>r1 some description\nACGT\nacgn\n\n>r2\tx\nRYSWKMBDHVU\n"
    assert triples(write(tmp_path / "a.fa", text)) == [
        ("r1", "ACGTacgn", 2),
        ("r2", "RYSWKMBDHVU", 6),
    ]
    text = "@q1 d\nACGT\n+q1 d\nIIII\n@q2\nAC\n+\nII\n"
    assert triples(write(tmp_path / "a.fq", text)) == [("q1", "ACGT", 1), ("q2", "AC", 5)]


def test_crlf_blank_lines_and_bom(tmp_path):
    text = BOM + "\r\n>r1 d\r\nACGT\r\n\r\nAC\r\n>r2\r\nGG\r\n\r\n"
    assert triples(write(tmp_path / "a.fa", text)) == [("r1", "ACGTAC", 2), ("r2", "GG", 6)]


def test_mixed_layouts_in_one_file(tmp_path):
    """A first record on one line, a later one on three: an even number of lines, which the
    single-line fast path must not pair up by position (it would read a record 'TT')."""
    text = ">a\nAC\n>b\nGG\nTT\nCC\n>c\nA\n"
    assert triples(write(tmp_path / "a.fa", text)) == [
        ("a", "AC", 1),
        ("b", "GGTTCC", 3),
        ("c", "A", 7),
    ]


def test_spaces_around_lines_are_accepted(tmp_path):
    """As the previous FASTA reader did: whitespace around a line is not part of it."""
    text = ">r1 d \n  ACGT\t\n AC \n"
    assert triples(write(tmp_path / "a.fa", text)) == [("r1", "ACGTAC", 1)]


@pytest.mark.parametrize("compression", list(COMPRESS))
@pytest.mark.parametrize("fmt", ["fasta", "fastq"])
def test_told_by_content_not_by_name(tmp_path, compression, fmt):
    text = ">r1\nACGT\n" if fmt == "fasta" else "@r1\nACGT\n+\nIIII\n"
    path = write(tmp_path / "reads.fa.gz", text, compression)  # the name says nothing
    assert sniff(path) == (compression, fmt)
    assert triples(path) == [("r1", "ACGT", 1)]


def test_multi_member_gzip(tmp_path):  # concatenated gzip files, as BGZF and `cat a.gz b.gz`
    path = tmp_path / "a.fq.gz"
    path.write_bytes(gzip.compress(b"@a\nAC\n+\nII\n") + gzip.compress(b"@b\nGG\n+\nII\n"))
    assert triples(path) == [("a", "AC", 1), ("b", "GG", 5)]


def test_several_files_are_one_sample(tmp_path):
    a = write(tmp_path / "a.fa", ">r1\nAC\n>r2\nGG\n")
    b = write(tmp_path / "b.fq", "@r3\nTT\n+\nII\n", "gzip")
    reads_ = list(iter_reads([a, b]))
    assert [(r.id, r.path, r.line) for r in reads_] == [
        ("r1", str(a), 1),
        ("r2", str(a), 3),
        ("r3", str(b), 1),
    ]
    assert [(r.id, r.seq) for r in iter_reads(a)] == [("r1", "AC"), ("r2", "GG")]  # one path


def test_no_input_files():
    with pytest.raises(ValueError, match="no input files"):
        list(iter_read_batches([]))


def test_missing_file_is_not_hidden(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(iter_reads([tmp_path / "nope.fa"]))


# -- the fast path never changes the outcome -------------------------------------------------

FASTA_NOISE = [
    ">r1",
    ">r9 d",
    "> r3",
    ">",
    "> \t",
    ">\xff",
    "ACGT",
    "acgt",
    "AC GT",
    " ACGT ",
    "\tNN",
    "AC*",
    "",
    "  ",
    "ACGT\r",
    "AC\rGT",
    "@x",
    "+",
    "é",
    ">r5 a\rb",
    ">r6\rAC",
]
FASTQ_NOISE = [
    "@q1",
    "@q9 d",
    "@",
    "@\xff",
    "ACGT",
    "acgt",
    "AC",
    "+",
    "+q1",
    "+zz",
    "IIII",
    "II",
    "I I",
    "@@@@",
    "",
    " ",
    "AC\rGT",
    "ACGT\r",
    "N*",
    "++++",
    "@q5 a\rb",
    "+\r+",
]


@st.composite
def damaged(draw, fmt, piece):
    """A mostly well-formed file with ``piece`` put in place of a line or between two, and up to
    two more lines of noise replaced, inserted or removed."""
    records = draw(st.lists(st.tuples(IDS, SEQS, DESCRIPTIONS), min_size=1, max_size=12))
    text = draw(fasta_text(records) if fmt == "fasta" else fastq_text(records, True))
    lines = text.split("\n")
    noise = FASTA_NOISE if fmt == "fasta" else FASTQ_NOISE
    edits = [piece, *draw(st.lists(st.sampled_from(noise), max_size=2))]
    for piece in edits:
        at = draw(st.integers(1, len(lines)))  # line 1 kept: the file stays FASTA or FASTQ
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "insert" or at == len(lines):
            lines.insert(at, piece)
        else:
            lines[at : at + 1] = [piece] if action == "replace" else []
    end = draw(st.sampled_from(["\n", "\r\n"]))
    return end.join(lines).encode("utf-8").replace("\xff".encode(), b"\xff")  # bad UTF-8


def outcome(path, block):
    """The reads (id, sequence, line) read, and the error's message (or None)."""
    got = []
    with mock.patch.object(reads, "_BLOCK_BYTES", block):
        try:
            for r in iter_reads(path):
                got.append((r.id, r.seq, r.line))
        except InputError as err:
            return got, str(err)
    return got, None


NOISE = [("fasta", p) for p in FASTA_NOISE] + [("fastq", p) for p in FASTQ_NOISE]


@pytest.mark.parametrize(("fmt", "piece"), NOISE, ids=[f"{f}:{p!r}" for f, p in NOISE])
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), block=st.sampled_from([7, 1 << 20]))
def test_fast_path_gives_what_the_line_by_line_path_gives(tmp_path, fmt, piece, data, block):
    """On damaged files too: the reads and the error are those of the line-by-line parser."""
    path = tmp_path / "in.txt"
    path.write_bytes(data.draw(damaged(fmt, piece)))
    fast = outcome(path, block)
    with (
        mock.patch.object(reads, "_fasta_fast", lambda *a: None),
        mock.patch.object(reads, "_fastq_fast", lambda *a: None),
    ):
        slow = outcome(path, 1 << 20)
    assert fast == slow


def test_fast_paths_take_the_usual_layouts():
    """The speed depends on them: single-line and wrapped FASTA, 4-line FASTQ."""
    single = b">a d\nACGT\n>b\nGG\n"
    assert reads._fasta_fast(single, 1).ids == ["a", "b"]
    wrapped = b">a\nAC\nGT\n\n>b\nGG\n"
    assert reads._fasta_fast(wrapped, 1).lines.tolist() == [1, 5]
    fastq = ["@a d", "ACGT", "+", "IIII", "@b", "GG", "+", "II"]
    assert reads._fastq_fast(fastq, 3).lines.tolist() == [3, 7]
    repeated = ["@a d", "ACGT", "+a d", "IIII", "@b", "GG", "+b", "II"]  # old SRA dumps
    assert reads._fastq_fast(repeated, 1).ids == ["a", "b"]


# -- bad input: one case each; the message names the file, the line and the record -----------

BAD_FASTA = {  # ported from test_fasta.py (the cases about reading), then the new ones
    "empty file": ("", 1, None, "file is empty"),
    "no records": ("\n  \n\n", 3, None, "no records"),
    "text before header": ("\nACGT\n>r1\nACGT\n", 2, None, "before the first header"),
    "header without id": (">r1\nACGT\n>\nACGT\n", 3, None, "header has no id ('>' alone)"),
    "header of spaces": (">r1\nACGT\n>   \nACGT\n", 3, None, "header has no id"),
    "empty sequence": (">r1\n>r2\nACGT\n", 1, "r1", "record has no sequence"),
    "empty last sequence": (">r1\nACGT\n>r2 desc\n\n", 3, "r2", "record has no sequence"),
    "star": (">r1\nACGT\nAC*T\n", 3, "r1", "'*' at column 3 is not an IUPAC nucleotide code"),
    "digit": (">r1\nACGT\n>r2\nACG1\n", 4, "r2", "'1' at column 4"),
    "gap": (">r1\nAC-GT\n", 2, "r1", "'-' at column 3"),
    "protein letter": (">r1\nACGTE\n", 2, "r1", "'E' at column 5"),
    "inner space": (">r1\nACG T\n", 2, "r1", "' ' at column 4"),
    "non-ascii": (">r1\nACGTé\n", 2, "r1", "byte 0xc3 at column 5"),
    "header not utf-8": (b">r1\nAC\n>r\xff2\nAC\n", 3, None, "header is not valid UTF-8"),
    "duplicate id": (
        ">r1 a\nACGT\n>r2\nAC\n>r1 b\nGG\n",
        5,
        "r1",
        "duplicate id (first at line 1)",
    ),
    "CR only": (">r1 d\rACGT\r>r2\rGG\r", 1, "r1", "lines end with CR only (old Mac format)"),
    "CR only later": (">r1\nACGT\n>r2\rGG\r", 3, "r2", "a CR without LF at column 4: lines end"),
    "lone CR in sequence": (">r1\r\nAC\rGT\r\n", 2, "r1", "CR without LF at column 3"),
    "zstd": (b"\x28\xb5\x2f\xfd\x00\x00", 1, None, "zstd-compressed, not supported"),
}
BAD_FASTQ = {
    "header without @": (
        "@q1\nAC\n+\nII\nq2\nAC\n+\nII\n",
        5,
        None,
        "expected a header line starting with '@' (after record 'q1'), found 'q2'",
    ),
    "header without id": ("@q1\nAC\n+\nII\n@ \nAC\n+\nII\n", 5, None, "header has no id ('@'"),
    "header not utf-8": (b"@q\xff1\nAC\n+\nII\n", 1, None, "header is not valid UTF-8"),
    "missing + line": ("@q1\nAC\nII\n@q2\nAC\n+\nII\n", 3, "q1", "missing the '+' line (found"),
    "wrapped FASTQ": (
        "@q1\nACGT\nACGT\n+\nIIIIIIII\n",
        3,
        "q1",
        "multi-line (wrapped) FASTQ is not supported",
    ),
    "quality too short": (
        "@q1\nACGT\n+\nIII\n",
        4,
        "q1",
        "quality line has 3 characters, the sequence 4",
    ),
    "quality too long": ("@q1\nAC\n+\nIII\n@q2\n", 4, "q1", "quality line has 3 characters"),
    "truncated record": (
        "@q1\nAC\n+\nII\n@q2\nACGT\n",
        5,
        "q2",
        "the file ends inside this record (2 of 4 lines)",
    ),
    "truncated after +": ("@q1\nAC\n+\n", 1, "q1", "ends inside this record (3 of 4 lines)"),
    "non-IUPAC": ("@q1\nAC\n+\nII\n@q2\nAXC\n+\nIII\n", 6, "q2", "'X' at column 2 is not an IUPAC"),
    "bad quality": ("@q1\nACG\n+\nI I\n", 4, "q1", "' ' at column 2 is not a quality character"),
    "+ of another read": ("@q1\nAC\n+q2\nII\n", 3, "q1", "the '+' line repeats 'q2'"),
    "empty sequence": ("@q1\n\n+\n\n", 2, "q1", "record has no sequence"),
    "blank line inside": (
        "@q1\nAC\n+\nII\n\n@q2\nAC\n+\nII\n",
        5,
        None,
        "blank line after record 'q1'",
    ),
    "CR only": ("@q1\rAC\r+\rII\r", 1, "q1", "lines end with CR only (old Mac format): convert"),
    "duplicate id": ("@q1\nAC\n+\nII\n@q1\nAC\n+\nII\n", 5, "q1", "duplicate id (first at line 1)"),
}


def assert_names(err, path, line, record, problem):
    message = str(err)
    assert message.startswith(f"{path}: line {line}, ")
    assert (f"record {record!r}" if record else "no record") in message
    assert problem in message
    assert (err.path, err.line, err.record) == (str(path), line, record)
    assert str(pickle.loads(pickle.dumps(err))) == message


@pytest.mark.parametrize("case", [*BAD_FASTA, *(f"fastq: {c}" for c in BAD_FASTQ)])
def test_bad_input_names_file_line_record(tmp_path, case):
    table = BAD_FASTQ if case.startswith("fastq: ") else BAD_FASTA
    text, line, record, problem = table[case.removeprefix("fastq: ")]
    path = write(tmp_path / "in.txt", text)
    with pytest.raises(InputError) as err:
        list(iter_read_batches([path]))
    assert_names(err.value, path, line, record, problem)


QUALITY_ABOVE_TILDE = {  # DEL (0x7f), the one ASCII character above '~'
    # bare '+' lines: the whole-block fast path takes this layout
    "fast": "@q1 d\nACGT\n+\nII~I\n@q2 d\nACG\n+\nI{q}I\n",
    # '+' lines repeating the id alone: only the line-by-line parser takes this one
    "slow": "@q1 d\nACGT\n+q1\nII~I\n@q2 d\nACG\n+q2\nI{q}I\n",
}


@pytest.mark.parametrize("path_taken", QUALITY_ABOVE_TILDE)
def test_quality_above_tilde_is_refused_on_either_path(tmp_path, path_taken):
    text = QUALITY_ABOVE_TILDE[path_taken]
    clean = text.format(q="I").split("\n")[:-1]
    assert (reads._fastq_fast(clean, 1) is not None) == (path_taken == "fast")
    path = write(tmp_path / "in.fq", text.format(q="\x7f"))
    with pytest.raises(InputError) as err:
        list(iter_read_batches([path]))
    problem = "byte 0x7f at column 2 is not a quality character ('!' to '~')"
    assert_names(err.value, path, 8, "q2", problem)
    path.write_text(text.format(q="I"))  # the same file with 'I' there reads
    assert [r.id for r in iter_reads(path)] == ["q1", "q2"]


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz"])
def test_truncated_compressed_file(tmp_path, compression):
    text = b">r1\n" + b"ACGT\n" * 200_000
    # bzip2 level 1: blocks of 100 kB, so the first half of the file holds whole blocks
    data = bz2.compress(text, 1) if compression == "bzip2" else COMPRESS[compression](text)
    path = tmp_path / "in.fa.x"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"in\.fa\.x: line \d+, record 'r1': cannot read the file"):
        list(iter_reads(path))


def test_damaged_compressed_data(tmp_path):
    data = bytearray(gzip.compress(b"".join(b">r%d\nACGT\n" % i for i in range(10_000))))
    data[len(data) // 2 : len(data) // 2 + 8] = b"\x00" * 8
    path = tmp_path / "in.fa.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"in\.fa\.gz: line \d+, record 'r\d+': cannot read"):
        list(iter_reads(path))


def test_error_comes_after_the_reads_before_it(tmp_path):
    """Streaming: the reads before a problem come out first, also from the same block."""
    path = write(tmp_path / "in.fa", ">r1\nACGT\n>r2\nAC*\n")
    stream = iter_reads(path)
    assert next(stream).id == "r1"
    with pytest.raises(InputError, match="line 4"):
        next(stream)
    good = "".join(f">r{i}\n{'ACGT' * 100}\n" for i in range(20_000))  # several blocks
    path = write(tmp_path / "big.fa", good + ">bad\nAC*\n", "gzip")
    stream = iter_read_batches(path)
    assert next(stream).ids[0] == "r0"
    with pytest.raises(InputError, match="'bad'"):
        list(stream)


# -- duplicate ids ---------------------------------------------------------------------------


def test_duplicate_across_files_names_both(tmp_path):
    a = write(tmp_path / "a.fa", ">x\nAC\n>y\nAC\n")
    b = write(tmp_path / "b.fq", "@z\nAC\n+\nII\n@y desc\nGG\n+\nII\n", "gzip")
    with pytest.raises(InputError) as err:
        list(iter_read_batches([a, b]))
    assert_names(err.value, b, 5, "y", f"duplicate id (first at line 3 of {a})")
    assert len(list(iter_reads([a, b], check_duplicates=False))) == 4


def test_duplicate_comes_after_the_last_batch(tmp_path):
    path = write(tmp_path / "a.fa", ">x\nAC\n>y\nAC\n>x\nGG\n")
    stream = iter_read_batches(path, batch_bases=2)
    assert [b.ids for b in (next(stream), next(stream), next(stream))] == [["x"], ["y"], ["x"]]
    with pytest.raises(InputError, match="duplicate id"):
        next(stream)


@pytest.mark.parametrize("confirm_at_once", [1, 1024])
def test_hash_collisions_never_give_a_false_error(tmp_path, monkeypatch, confirm_at_once):
    """Every id gets the same hash: only the real ids decide, and the first duplicate in
    sample order is the one named."""
    monkeypatch.setattr(read_ids, "hash", lambda _: 7, raising=False)
    monkeypatch.setattr(read_ids, "_CONFIRM_AT_ONCE", confirm_at_once)
    a = write(tmp_path / "a.fa", "".join(f">r{i}\nAC\n" for i in range(50)))
    assert len(list(iter_reads([a]))) == 50
    b = write(tmp_path / "b.fa", ">s1\nAC\n>r7\nAC\n>s1\nAC\n>r3\nGG\n")
    with pytest.raises(InputError) as err:
        list(iter_reads([a, b]))
    assert_names(err.value, b, 3, "r7", f"duplicate id (first at line 15 of {a})")


def test_duplicates_with_real_hashes(tmp_path):
    text = "".join(f">r{i}\nAC\n" for i in range(3000)) + ">r2999\nAC\n>r5\nAC\n"
    with pytest.raises(InputError) as err:
        list(iter_reads(write(tmp_path / "a.fa", text)))
    assert_names(err.value, tmp_path / "a.fa", 6001, "r2999", "duplicate id (first at line 5999)")


def test_id_memory_stays_compact(tmp_path):
    """Memory kept over the stream grows by at most ~24 bytes a read (no dict or set of ids)."""

    def peak(n: int) -> int:
        path = write(tmp_path / f"{n}.fa", "".join(f">r{i}\nA\n" for i in range(n)))
        for _ in iter_read_batches(path, batch_bases=1 << 12):  # warm up imports, caches
            break
        tracemalloc.start()
        for _ in iter_read_batches(path, batch_bases=1 << 12):
            pass
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top

    # blocks of 64 KiB: what one block's reads take is then the same small amount for both
    with mock.patch.object(reads, "_BLOCK_BYTES", 1 << 16):
        small, large = peak(20_000), peak(220_000)
    assert (large - small) / 200_000 < 30


# -- batches ---------------------------------------------------------------------------------


def test_batches_by_bases_long_read_alone_never_across_files(tmp_path):
    a = write(tmp_path / "a.fa", ">a\nACGT\n>b\nAC\n>c\nAC\n>long\n" + "A" * 50 + "\n>d\nG\n")
    b = write(tmp_path / "b.fa", ">e\nACGTACGT\n>f\nG\n")
    batches = list(iter_read_batches([a, b], batch_bases=6))
    assert [b.ids for b in batches] == [["a", "b"], ["c"], ["long"], ["d"], ["e"], ["f"]]
    assert [b.path for b in batches] == [str(a)] * 4 + [str(b)] * 2
    assert [b.first for b in batches] == [0, 2, 3, 4, 5, 6]
    assert batches[2].lengths.tolist() == [50]
    assert batches[0].lines.tolist() == [1, 3]
    assert batches[0].lengths.dtype == np.int64


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_bases"):
        next(iter_read_batches(["x"], batch_bases=0))


def test_batches_through_select_frames_match_the_golden_files(golden_dir, tmp_path):
    source = write(tmp_path / "input.fq.xz", fasta_as_fastq(golden_dir / "input.fa"), "xz")
    ids, nts, aas = [], [], []
    for batch in iter_read_batches(source, batch_bases=3000):
        frames = select_frames(batch.ids, batch.seqs, 500)
        ids += frames.ids
        nts += frames.nucleotides
        aas += frames.proteins
    with open(golden_dir / "identified_nucleotide500.fa", encoding="utf-8") as nt:
        assert list(zip(ids, nts, strict=True)) == list(SimpleFastaParser(nt))
    with open(golden_dir / "identified_protein500.faa", encoding="utf-8") as aa:
        assert list(zip(ids, aas, strict=True)) == list(SimpleFastaParser(aa))


def fasta_as_fastq(path) -> str:
    with open(path, encoding="utf-8") as handle:
        return "".join(f"@{t}\n{s}\n+\n{quality(s)}\n" for t, s in SimpleFastaParser(handle))
