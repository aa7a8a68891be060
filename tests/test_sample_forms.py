"""Paired-end and interleaved samples (issue 35): the config mapping's ``{r1, r2}`` and
``{interleaved}`` forms and the nf-core sample sheet (``sample``, ``fastq_1``, ``fastq_2``), as
read by virnuc_core.data.samples; mistakes named by config key or sheet line."""

from __future__ import annotations

import pytest

from virnuc_core.data.samples import (
    INTERLEAVED,
    PAIRS,
    SINGLE,
    Sample,
    SampleError,
    read_sample_table,
    read_samples,
)


def sheet(tmp_path, header: str, *rows: str) -> str:
    path = tmp_path / "samples.tsv"
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows))
    return str(path)


def test_a_mapping_pair_is_one_paired_sample():
    table = read_sample_table({"gut1": {"r1": "R1.fq.gz", "r2": "R2.fq.gz"}, "x": "x.fa"})
    assert table == {
        "gut1": Sample(PAIRS, ("R1.fq.gz", "R2.fq.gz")),
        "x": Sample(SINGLE, ("x.fa",)),
    }
    assert table["gut1"].paired and not table["x"].paired
    assert table["gut1"].pairs == [("R1.fq.gz", "R2.fq.gz")]
    # the flat form its callers had: every file, in read order
    assert read_samples({"gut1": {"r1": "R1.fq.gz", "r2": "R2.fq.gz"}}) == {
        "gut1": ["R1.fq.gz", "R2.fq.gz"]
    }


def test_mapping_lists_pair_file_by_file_in_order():
    table = read_sample_table({"s": {"r1": ["a1.fq", "b1.fq"], "r2": ["a2.fq", "b2.fq"]}})
    assert table["s"].pairs == [("a1.fq", "a2.fq"), ("b1.fq", "b2.fq")]


def test_mapping_lists_of_unequal_length_are_refused():
    with pytest.raises(SampleError) as err:
        read_sample_table({"s": {"r1": ["a1.fq", "b1.fq"], "r2": "a2.fq"}})
    assert str(err.value) == (
        "config 'samples': sample 's': r1 lists 2 file(s), r2 1: list the files of each pair "
        "at the same place in r1 and r2"
    )


@pytest.mark.parametrize("value", [{"r1": "a.fq"}, {"r1": "a", "r2": "b", "r3": "c"}, {}])
def test_a_mapping_without_exactly_r1_and_r2_is_refused_naming_the_sample(value):
    with pytest.raises(SampleError, match=r"^config 'samples': sample 's': keys .*give r1 and r2"):
        read_sample_table({"s": value})


def test_an_empty_mate_list_is_refused_naming_the_key():
    with pytest.raises(SampleError, match=r"^config 'samples': sample 's', key 'r2' lists no file"):
        read_sample_table({"s": {"r1": "a.fq", "r2": []}})


def test_a_mate_file_given_as_both_mates_is_refused():
    with pytest.raises(SampleError, match="file './a.fq' is listed twice for sample 's'"):
        read_sample_table({"s": {"r1": "a.fq", "r2": "./a.fq"}})


def test_an_interleaved_file_is_said_so_in_the_mapping():
    table = read_sample_table({"s": {"interleaved": "il.fq"}, "t": "il2.fq"})
    assert table["s"] == Sample(INTERLEAVED, ("il.fq",)) and table["s"].paired
    assert table["t"] == Sample(SINGLE, ("il2.fq",))  # never guessed


def test_a_paired_sheet_gives_each_sample_its_pairs_in_row_order(tmp_path):
    path = sheet(
        tmp_path,
        "sample\tfastq_1\tfastq_2",
        "gut1\tL1_R1.fq.gz\tL1_R2.fq.gz",
        "gut2\tg2_R1.fq.gz\tg2_R2.fq.gz",
        "gut1\tL2_R1.fq.gz\tL2_R2.fq.gz",
        "solo\tsolo.fq.gz\t",  # nf-core: an empty fastq_2 is a single-end row
    )
    table = read_sample_table(path)
    assert table["gut1"].pairs == [("L1_R1.fq.gz", "L1_R2.fq.gz"), ("L2_R1.fq.gz", "L2_R2.fq.gz")]
    assert table["gut2"].pairs == [("g2_R1.fq.gz", "g2_R2.fq.gz")]
    assert table["solo"] == Sample(SINGLE, ("solo.fq.gz",))


def test_a_sample_whose_rows_mix_pairs_and_single_files_is_refused_naming_the_line(tmp_path):
    path = sheet(tmp_path, "sample\tfastq_1\tfastq_2", "s\ta1.fq\ta2.fq", "s\tb.fq\t")
    with pytest.raises(SampleError) as err:
        read_sample_table(path)
    assert str(err.value) == (
        f"sample sheet {path!r}, line 3: this row of sample 's' is single-end, its row on line "
        "2 paired (fastq_1/fastq_2): a sample's rows are all of one kind; give the others "
        "another sample name"
    )


def test_a_file_repeated_in_a_paired_sheet_is_refused_naming_both_lines(tmp_path):
    path = sheet(tmp_path, "sample\tfastq_1\tfastq_2", "s\ta1.fq\ta2.fq", "s\tb1.fq\ta2.fq")
    with pytest.raises(SampleError) as err:
        read_sample_table(path)
    assert str(err.value).startswith(
        f"sample sheet {path!r}, line 3: file 'a2.fq' is listed twice for sample 's' (also on "
        "line 2)"
    )


def test_a_sheet_row_marked_interleaved_is_read_as_pairs(tmp_path):
    path = sheet(tmp_path, "sample\treads\tinterleaved", "s\til.fq\ttrue", "t\tse.fq\t")
    table = read_sample_table(path)
    assert table == {"s": Sample(INTERLEAVED, ("il.fq",)), "t": Sample(SINGLE, ("se.fq",))}


def test_an_unclear_interleaved_value_is_refused_naming_the_line(tmp_path):
    path = sheet(tmp_path, "sample\treads\tinterleaved", "s\til.fq\ttrue", "t\tse.fq\tpaired")
    with pytest.raises(SampleError) as err:
        read_sample_table(path)
    assert str(err.value) == (
        f"sample sheet {path!r}, line 3: interleaved is 'paired'; write true or false (or "
        "leave it empty)"
    )


def test_a_sheet_naming_reads_and_fastq_1_is_refused(tmp_path):
    path = sheet(tmp_path, "sample\treads\tfastq_1\tfastq_2", "s\ta.fq\tb.fq\tc.fq")
    with pytest.raises(SampleError, match=r"line 1 names both 'reads' and 'fastq_1'"):
        read_sample_table(path)
