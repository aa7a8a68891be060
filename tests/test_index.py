"""The index stage: frames.fa, proteins.faa, both index files, ids read back in blocks."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from Bio import SeqIO

from virnuc_core.data.frames import FRAME_LABELS, iter_frame_batches, select_frames
from virnuc_core.data.index import (
    INDEX_DTYPE,
    index_sample,
    open_index,
    read_ids,
    sequence_spans,
    write_index,
)
from virnuc_core.data.reads import InputError, iter_reads
from virnuc_core.util.fasta import read_sequences
from virnuc_core.util.npyfile import NpyAppender, NpyReader


def pairs(path):
    """(id, sequence) of a FASTA file, read by Biopython (an independent parser)."""
    return [(r.id, str(r.seq)) for r in SeqIO.parse(path, "fasta")]


def outputs(tmp_path):
    out = tmp_path / "results" / "sample"
    names = ("frames.fa", "proteins.faa", "frames.index.npy")
    return [out / n for n in names]


def index_stage(tmp_path, source, size=500, batch_bases=1 << 16):
    paths = outputs(tmp_path)
    batches = iter_frame_batches(iter_reads(source), size, batch_bases)
    return write_index(batches, *paths), paths


@pytest.mark.parametrize("batch_bases", [1 << 20, 600])
def test_outputs_match_the_golden_files_and_each_other(golden_dir, tmp_path, batch_bases):
    counts, (frames_fa, proteins_faa, index_npy) = index_stage(
        tmp_path, golden_dir / "input.fa", batch_bases=batch_bases
    )
    inputs = list(iter_reads(golden_dir / "input.fa"))
    want = select_frames([r.id for r in inputs], [r.seq for r in inputs], 500)
    assert counts.as_dict() == {"reads": 200, "chunks": want.chunks, "frames": len(want.ids)}
    assert pairs(frames_fa) == pairs(golden_dir / "identified_nucleotide500.fa")
    assert pairs(proteins_faa) == pairs(golden_dir / "identified_protein500.faa")

    index = open_index(index_npy)
    binary = index.read()
    assert len(index) == len(want.ids)
    assert binary["nt_length"].tolist() == [len(x) for x in want.nucleotides]
    assert binary["aa_length"].tolist() == [len(x) for x in want.proteins]
    assert read_ids(frames_fa, index, 0, len(index)) == want.ids
    # read, chunk and frame rebuild every id (read ids from the input, independently)
    rebuilt = [
        f"{inputs[r].id}_chunk_{c + 1}{FRAME_LABELS[f]}"
        for r, c, f in zip(binary["read"], binary["chunk"], binary["frame"], strict=True)
    ]
    assert rebuilt == want.ids
    # A shard job reads only its own records, in any order.
    pick = np.sort(np.random.default_rng(0).permutation(len(index))[: len(index) // 3])
    offsets, lengths = sequence_spans(binary[pick], ("nt_offset", "nt_length"))
    assert read_sequences(frames_fa, offsets, lengths) == [want.nucleotides[i] for i in pick]
    offsets, lengths = sequence_spans(binary[pick], ("aa_offset", "aa_length"))
    assert read_sequences(proteins_faa, offsets, lengths) == [want.proteins[i] for i in pick]


def test_ids_read_back_in_blocks_of_any_size(tmp_path):
    reads = tmp_path / "r.fa"
    reads.write_text("".join(f">ñ{i}x desc\n{'ATGAAACCC' * (5 + i % 7)}\n" for i in range(60)))
    _, (frames_fa, _, index_npy) = index_stage(tmp_path, reads, size=30, batch_bases=100)
    index = open_index(index_npy)
    want = [r.id for r in SeqIO.parse(frames_fa, "fasta")]
    for block in (1, 7, len(want)):
        got = [i for lo in range(0, len(want), block) for i in read_ids(frames_fa, index, lo,
               min(len(want), lo + block))]  # fmt: skip
        assert got == want
    assert read_ids(frames_fa, index, 5, 5) == []


def test_ids_read_through_a_mismatched_index_are_refused_naming_the_file(tmp_path):
    """frames.fa written again after the first read lost its last base, read through the index
    of the reads before: the index's offsets now land inside other lines; no id is returned
    cut short, the read is refused naming the file and the records."""
    seq = "ATGAAACCC" * 6
    before, after = tmp_path / "before.fa", tmp_path / "after.fa"
    before.write_text(f">r1\n{seq}\n>r2\n{seq}\n")
    after.write_text(f">r1\n{seq[:-1]}\n>r2\n{seq}\n")
    _, (_, _, index_npy) = index_stage(tmp_path / "old", before)
    _, (frames_fa, _, _) = index_stage(tmp_path / "new", after)
    index = open_index(index_npy)
    ids = [r.id for r in SeqIO.parse(frames_fa, "fasta")]
    assert len(ids) == len(index) > 2  # same frames, each of r1's one base shorter
    assert read_ids(frames_fa, index, 0, 1) == ids[:1]  # where nothing moved yet
    for lo, hi in [(1, 2), (2, 3), (1, len(index)), (len(index) - 1, len(index))]:
        with pytest.raises(ValueError) as err:
            read_ids(frames_fa, index, lo, hi)
        assert str(err.value) == (
            f"{frames_fa}: records {lo}..{hi - 1} are not where the index says"
        )


def test_index_sample_reads_files_in_order(tmp_path):
    a, b = tmp_path / "a.fa", tmp_path / "b.fa.gz"
    a.write_text(">x\n" + "ATG" * 120 + "\n")
    b.write_bytes(gzip.compress((">y\n" + "ATGAAA" * 40 + "\n").encode()))
    out = {k: str(p) for k, p in zip(("frames", "proteins", "index"), outputs(tmp_path),
                                     strict=True)}  # fmt: skip
    out["counts"] = str(tmp_path / "counts.json")
    counts = index_sample([str(a), str(b)], 300, out)
    ids = [r.id for r in SeqIO.parse(out["frames"], "fasta")]
    assert counts.reads == 2 and ids[0].startswith("x_chunk_1") and ids[-1].startswith("y_chunk")
    assert open_index(out["index"]).column("read").tolist() == [
        0 if i.startswith("x") else 1 for i in ids
    ]


def test_nothing_appears_on_bad_input(tmp_path):
    good = "".join(f">r{i}\n{'ATG' * 200}\n" for i in range(50))
    source = tmp_path / "in.fa"
    source.write_text(good + ">bad\nATG*\n")
    with pytest.raises(InputError, match="'bad'"):
        index_stage(tmp_path, source, size=300, batch_bases=1000)  # some batches written first
    assert [p.name for p in (tmp_path / "results" / "sample").iterdir()] == []


def test_an_old_output_is_kept_on_failure(tmp_path):
    source = tmp_path / "in.fa"
    source.write_text(">a\nATGATG\n")
    _, paths = index_stage(tmp_path, source)
    before = [p.read_bytes() for p in paths]
    source.write_text(">a\nATGATG\n>a\nAT\n")
    with pytest.raises(InputError, match="duplicate"):
        index_stage(tmp_path, source)
    assert [p.read_bytes() for p in paths] == before


def test_empty_index(tmp_path):
    source = tmp_path / "in.fa"
    source.write_text(">a\nNNNNNNNA\n")  # every codon dropped: all proteins empty
    counts, (frames_fa, _, index_npy) = index_stage(tmp_path, source)
    assert counts.as_dict() == {"reads": 1, "chunks": 1, "frames": 0}
    assert frames_fa.read_bytes() == b""
    assert len(open_index(index_npy)) == 0 and np.load(index_npy).dtype == INDEX_DTYPE


def test_npy_appender_writes_what_numpy_reads(tmp_path):
    rng = np.random.default_rng(3)
    dtype = np.dtype([("a", "<i8"), ("b", "u1"), ("c", "<f4", (3,))])
    parts = [np.zeros(k, dtype) for k in (0, 5, 1, 17)]
    for p in parts:
        p["a"], p["b"], p["c"] = rng.integers(0, 1 << 40, p.size), 7, rng.random((p.size, 3))
    path = tmp_path / "x.npy"
    with open(path, "wb") as handle:
        out = NpyAppender(handle, dtype)
        for p in parts:
            out.append(p)
        out.close()
    whole = np.concatenate(parts)
    np.testing.assert_array_equal(np.load(path), whole)  # numpy's own reader
    reader = NpyReader(path, dtype)
    np.testing.assert_array_equal(reader.read(3, 9), whole[3:9])
    np.testing.assert_array_equal(reader.column("a", 2, 20, block=4), whole["a"][2:20])
    with pytest.raises(ValueError, match="holds"):
        NpyReader(path, np.dtype("<i8"))
    buf = io.BytesIO()
    NpyAppender(buf, dtype).close()
    assert np.load(io.BytesIO(buf.getvalue())).shape == (0,)
