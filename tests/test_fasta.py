"""FASTA written by the workflow: one sequence line per record, read back by byte offset."""

from __future__ import annotations

import numpy as np
import pytest
from Bio import SeqIO

from virnuc_core.util.fasta import FastaWriter, read_sequences, write_fasta


def test_write_fasta_round_trip(tmp_path):
    path = tmp_path / "out" / "x.fa"
    write_fasta(path, ["a", "b"], ["ACGT", "GG"])
    assert path.read_text() == ">a\nACGT\n>b\nGG\n"
    assert [(r.id, str(r.seq)) for r in SeqIO.parse(path, "fasta")] == [("a", "ACGT"), ("b", "GG")]


def test_writer_offsets_with_non_ascii_ids(tmp_path):
    path = tmp_path / "x.fa"
    with open(path, "wb") as handle:
        writer = FastaWriter(handle)
        first = writer.write(["ñandú", "b"], ["ACGT", "GG"])  # ids of 7 and 1 bytes
        assert writer.last_id_bytes.tolist() == [7, 1]
        second = writer.write(["ç"], ["TTT"])
    offsets = np.concatenate([first, second])
    assert read_sequences(path, offsets, [4, 2, 3]) == ["ACGT", "GG", "TTT"]


def test_read_sequences_detects_a_wrong_offset(tmp_path):
    path = tmp_path / "x.fa"
    path.write_text(">a\nACGT\n")
    assert read_sequences(path, [3], [4]) == ["ACGT"]
    with pytest.raises(ValueError, match="offset 2"):
        read_sequences(path, [2], [4])
