"""FASTA intake (validation, gzip, line endings) and FASTA writing."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
from Bio import SeqIO

from virnuc_core.fasta import FastaError, FastaWriter, read_fasta, read_sequences, write_fasta


def write(tmp_path, text, name="in.fa"):
    path = tmp_path / name
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def pairs(path):
    """(id, sequence) of a FASTA file, read by Biopython (an independent parser)."""
    return [(r.id, str(r.seq)) for r in SeqIO.parse(path, "fasta")]


def records(path):
    return [(r.id, r.seq, r.line) for r in read_fasta(path)]


# -- bad input: one case each; the message names the file, the line and the record -----------

BAD = {
    "empty file": ("", 1, None, "file is empty"),
    "no records": ("\n  \n\n", 3, None, "no FASTA records"),
    "text before header": ("\nACGT\n>r1\nACGT\n", 2, None, "before the first header"),
    "header without id": (">r1\nACGT\n>\nACGT\n", 3, None, "header has no id"),
    "header of spaces": (">r1\nACGT\n>   \nACGT\n", 3, None, "header has no id"),
    "empty sequence": (">r1\n>r2\nACGT\n", 1, "r1", "no sequence"),
    "empty last sequence": (">r1\nACGT\n>r2 desc\n\n", 3, "r2", "no sequence"),
    "star": (">r1\nACGT\nAC*T\n", 3, "r1", "'*' at column 3 is not an IUPAC"),
    "digit": (">r1\nACGT\n>r2\nACG1\n", 4, "r2", "'1' at column 4"),
    "gap": (">r1\nAC-GT\n", 2, "r1", "'-' at column 3"),
    "protein letter": (">r1\nACGTE\n", 2, "r1", "'E' at column 5"),
    "inner space": (">r1\nACG T\n", 2, "r1", "' ' at column 4"),
    "non-ascii": (">r1\nACGTé\n", 2, "r1", "byte 0xc3 at column 5"),
    "duplicate id": (
        ">r1 a\nACGT\n>r2\nAC\n>r1 b\nGG\n",
        5,
        "r1",
        "duplicate id (first at line 1)",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_names_file_line_record(tmp_path, case):
    text, line, record, problem = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(FastaError) as err:
        list(read_fasta(path))
    message = str(err.value)
    assert str(path) in message
    assert f"line {line}," in message
    assert problem in message
    assert (f"record {record!r}" if record else "no record") in message
    assert (err.value.line, err.value.record) == (line, record)
    assert str(pickle.loads(pickle.dumps(err.value))) == message


def test_bad_gzip_is_a_fasta_error(tmp_path):
    data = gzip.compress(b">r1\n" + b"ACGT\n" * 50_000)
    path = write(tmp_path, data[: len(data) // 2])  # truncated
    with pytest.raises(FastaError, match=r"in\.fa: line \d+, record 'r1': cannot read the file"):
        list(read_fasta(path))


def test_missing_file_is_not_hidden(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_fasta(tmp_path / "nope.fa"))


def test_error_comes_while_streaming(tmp_path):
    """Records before the bad one are yielded first: the file is never read whole."""
    path = write(tmp_path, ">r1\nACGT\n>r2\nAC*\n")
    reader = read_fasta(path)
    assert next(reader).id == "r1"
    with pytest.raises(FastaError, match="line 4"):
        next(reader)


# -- good input -------------------------------------------------------------------------------


def test_ids_sequences_lines(tmp_path):
    text = ">r1 some description\nACGT\nacgn\n\n>r2\tx\nRYSWKMBDHVU\n"
    assert records(write(tmp_path, text)) == [("r1", "ACGTacgn", 1), ("r2", "RYSWKMBDHVU", 5)]


def test_crlf_and_blank_lines(tmp_path):
    text = "\r\n>r1 d\r\nACGT\r\n\r\nAC\r\n>r2\r\nGG\r\n\r\n"
    assert records(write(tmp_path, text)) == [("r1", "ACGTAC", 2), ("r2", "GG", 6)]


@pytest.mark.parametrize("name", ["in.fa.gz", "in.fa"])  # gzip told by magic bytes, not name
def test_gzip(tmp_path, name):
    text = ">r1\nACGT\n>r2\nacgt\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    assert records(path) == [("r1", "ACGT", 1), ("r2", "acgt", 3)]


def test_plain_file_named_gz(tmp_path):
    path = tmp_path / "plain.fa.gz"
    path.write_text(">r1\nACGT\n")
    assert records(path) == [("r1", "ACGT", 1)]


def test_matches_biopython_on_golden_input(golden_dir):
    ours = [(r.id, r.seq) for r in read_fasta(golden_dir / "input.fa")]
    assert ours == pairs(golden_dir / "input.fa")


def test_write_fasta_round_trip(tmp_path):
    path = tmp_path / "out" / "x.fa"
    write_fasta(path, ["a", "b"], ["ACGT", "GG"])
    assert path.read_text() == ">a\nACGT\n>b\nGG\n"
    assert records(path) == [("a", "ACGT", 1), ("b", "GG", 3)]


def test_writer_offsets_with_non_ascii_ids(tmp_path):
    path = tmp_path / "x.fa"
    with open(path, "wb") as handle:
        writer = FastaWriter(handle)
        first = writer.write(["ñandú", "b"], ["ACGT", "GG"])  # ids of 7 and 1 bytes
        second = writer.write(["ç"], ["TTT"])
    offsets = np.concatenate([first, second])
    assert read_sequences(path, offsets, [4, 2, 3]) == ["ACGT", "GG", "TTT"]


def test_read_sequences_detects_a_wrong_offset(tmp_path):
    path = write(tmp_path, ">a\nACGT\n")
    assert read_sequences(path, [3], [4]) == ["ACGT"]
    with pytest.raises(ValueError, match="offset 2"):
        read_sequences(path, [2], [4])
