"""The samples of a run (virnuc_core.data.samples): names that are safe folder names, a
sample's files in order, a file or config key given twice refused, inputs that are not files
named for what they are (issues 33 and 34). Two dry runs show the refusals reach the user before
any job."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.workflow_helpers import DEMO_READS, run_snakemake, write_config
from virnuc_core.data.samples import SampleError, check_config_file, missing_files, read_samples


def sheet(tmp_path, *rows: str):
    """A sample sheet with the given tab-separated rows under the header ``sample reads``."""
    path = tmp_path / "samples.tsv"
    path.write_text("sample\treads\n" + "".join(row + "\n" for row in rows))
    return path


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_a_name_starting_with_a_dot_is_refused_in_the_config(name):
    # '..' made results/../ the sample's folder: its summary.tsv overwrote the run folder's
    with pytest.raises(SampleError) as err:
        read_samples({"ok": "a.fa", name: "b.fa"})
    assert str(err.value) == (
        f"config 'samples': sample name {name!r} may not start with '.': it is the sample's "
        "folder under results/ ('..' is the run folder itself, '.' is results/); rename the sample"
    )


@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_a_name_starting_with_a_dot_is_refused_in_a_sample_sheet(tmp_path, name):
    path = sheet(tmp_path, "ok\ta.fa", f"{name}\tb.fa")
    with pytest.raises(SampleError) as err:
        read_samples(str(path))
    assert str(err.value).startswith(
        f"sample sheet {str(path)!r}, line 3: sample name {name!r} may not start with '.'"
    )


@pytest.mark.parametrize("name", ["a/b", "a b", "a\n", "../x", ""])
def test_a_name_must_match_whole_in_the_config(name):
    with pytest.raises(SampleError, match="may hold only letters, digits, '_', '.' and '-'"):
        read_samples({name: "a.fa"})


@pytest.mark.parametrize("name", ["a/b", "a b", "gut1 ", "../x"])
def test_a_name_must_match_whole_in_a_sample_sheet(tmp_path, name):
    path = sheet(tmp_path, "ok\ta.fa", f"{name}\tb.fa")
    with pytest.raises(SampleError) as err:
        read_samples(str(path))
    assert str(err.value) == (
        f"sample sheet {str(path)!r}, line 3: sample name {name!r} may hold only letters, "
        "digits, '_', '.' and '-'"
    )


def test_a_sheet_error_names_the_file_line_past_blank_lines(tmp_path):
    path = sheet(tmp_path, "ok\ta.fa", "", "", "..\tb.fa")
    with pytest.raises(SampleError, match=re.escape(f"{str(path)!r}, line 5: sample name '..'")):
        read_samples(str(path))


def test_good_names_are_kept_in_both_forms(tmp_path):
    names = ["gut1", "S_2.lane-3", "a.b", "x..y"]
    expected = {n: [f"{n}.fa"] for n in names}
    assert read_samples({n: f"{n}.fa" for n in names}) == expected
    assert read_samples(str(sheet(tmp_path, *(f"{n}\t{n}.fa" for n in names)))) == expected


# ------------------------------------------------------------------ a sample's files


def test_a_sample_on_several_sheet_rows_keeps_all_its_files_in_row_order(tmp_path):
    path = sheet(tmp_path, "gut1\tR1.fq.gz", "soil\ts.fa", "gut1\tR2.fq.gz", "gut1\tR3.fq.gz")
    table = read_samples(str(path))
    assert table == {"gut1": ["R1.fq.gz", "R2.fq.gz", "R3.fq.gz"], "soil": ["s.fa"]}
    assert list(table) == ["gut1", "soil"]


def test_a_file_listed_twice_for_one_sample_in_a_sheet_is_refused(tmp_path):
    # 'sub/../R1.fq.gz' is the same file as 'R1.fq.gz': embedding it twice would only fail later, on
    # the duplicate read ids
    path = sheet(tmp_path, "gut1\tR1.fq.gz", "gut1\tR2.fq.gz", "gut1\tsub/../R1.fq.gz")
    with pytest.raises(SampleError) as err:
        read_samples(str(path))
    assert str(err.value) == (
        f"sample sheet {str(path)!r}, line 4: file 'sub/../R1.fq.gz' is listed twice for sample "
        "'gut1' (also on line 2); list each file of a sample once"
    )


def test_a_file_listed_twice_for_one_sample_in_the_config_is_refused():
    with pytest.raises(SampleError) as err:
        read_samples({"gut1": ["R1.fq.gz", "R2.fq.gz", "R1.fq.gz"]})
    assert str(err.value) == (
        "config 'samples': file 'R1.fq.gz' is listed twice for sample 'gut1'; "
        "list each file of a sample once"
    )


def test_one_file_in_two_samples_is_allowed(tmp_path):
    path = sheet(tmp_path, "a\tR1.fq.gz", "b\tR1.fq.gz")
    assert read_samples(str(path)) == {"a": ["R1.fq.gz"], "b": ["R1.fq.gz"]}


# ------------------------------------------------------------------ a key given twice


def test_a_sample_named_twice_in_a_config_file_is_refused_with_its_line(tmp_path):
    # the way a user lists mates; YAML keeps only R2.fq.gz, silently
    path = tmp_path / "config.yaml"
    path.write_text("chunk_length: 300\nsamples:\n  gut1: R1.fq.gz\n  gut1: R2.fq.gz\n")
    with pytest.raises(SampleError) as err:
        check_config_file(path)
    assert str(err.value) == (
        f"config file {str(path)!r}, line 4: sample 'gut1' is named twice (also on line 3); "
        "only the last would be used. List a sample's files under one name, "
        "e.g. gut1: [R1.fq.gz, R2.fq.gz]"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("shards: 2\nsamples: {a: x.fa}\nshards: 3\n", "line 3: key 'shards' is given twice"),
        ("validate:\n  n: 4\n  seed: 1\n  n: 5\n", "line 4: key 'n' is given twice in validate"),
        ("samples: {a: x.fa, a: y.fa}\n", "line 1: sample 'a' is named twice (also on line 1)"),
        (
            '{\n\t"samples": {\n\t\t"a": "x.fa",\n\t\t"a": "y.fa"\n\t}\n}\n',
            "key 'a' is given twice",
        ),
    ],
    ids=["top-level", "nested", "flow-mapping", "json-with-tabs"],
)
def test_any_key_given_twice_in_a_config_file_is_refused(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(SampleError, match=re.escape(message)):
        check_config_file(path)


def test_a_config_file_without_a_key_twice_passes(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "samples:\n  gut1: [R1.fq.gz, R2.fq.gz]\n  soil: s.fa\n"
        "token_budget: &b {dnabert: 4096, esm: 4096}\nother: *b\nvalidate: {n: 4}\n"
    )
    check_config_file(path)  # refuses nothing
    path.write_text("samples: samples.tsv\n")
    check_config_file(path)


# ------------------------------------------------------------------ what an input is


def test_inputs_that_are_not_regular_files_are_named_for_what_they_are(tmp_path):
    good = tmp_path / "reads.fa"
    good.write_text(">r\nACGT\n")
    folder = tmp_path / "reads"
    folder.mkdir()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    dangling = tmp_path / "link.fa"
    dangling.symlink_to(tmp_path / "gone.fa")
    spaced = f"{good} "  # a trailing space: not the file that exists
    table = {"s": [str(good), str(folder), "/dev/zero", str(fifo), spaced, str(dangling)]}
    assert missing_files(table) == [
        f"sample 's': input file {str(folder)!r} is a directory, not a file of reads",
        "sample 's': input file '/dev/zero' is a character device, not a file of reads",
        f"sample 's': input file {str(fifo)!r} is a FIFO (named pipe), not a file of reads",
        f"sample 's': input file {spaced!r} does not exist",
        f"sample 's': input file {str(dangling)!r} is a broken symbolic link",
    ]
    assert missing_files({"s": [str(good)]}) == []


# ------------------------------------------------------------------ through Snakemake


def console(proc) -> str:
    return proc.stdout + proc.stderr


@pytest.mark.workflow
def test_dry_run_refuses_a_sample_named_twice_in_the_config_file(tmp_path):
    r1, r2 = tmp_path / "R1.fa", tmp_path / "R2.fa"
    shutil.copy(DEMO_READS, r1)
    shutil.copy(DEMO_READS, r2)
    config = write_config(tmp_path, samples={"gut1": str(r1)})
    lines = config.read_text().splitlines(keepends=True)
    at = lines.index(f"  gut1: {r1}\n")
    lines.insert(at + 1, f"  gut1: {r2}\n")  # the mate, as a second key
    config.write_text("".join(lines))
    proc = run_snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert (
        f"config file {str(config)!r}, line {at + 2}: sample 'gut1' is named twice "
        f"(also on line {at + 1}); only the last would be used"
    ) in console(proc)


@pytest.mark.workflow
def test_dry_run_names_inputs_that_are_not_files_of_reads(tmp_path):
    folder = tmp_path / "reads"
    folder.mkdir()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    spaced = f"{DEMO_READS} "
    samples = {"a": str(folder), "b": "/dev/zero", "c": str(fifo), "d": spaced}
    write_config(tmp_path, samples=samples)
    proc = run_snakemake(tmp_path, "-n", check=False)
    out = console(proc)
    assert proc.returncode != 0
    assert f"sample 'a': input file {str(folder)!r} is a directory, not a file of reads" in out
    assert "sample 'b': input file '/dev/zero' is a character device, not a file of reads" in out
    assert f"sample 'c': input file {str(fifo)!r} is a FIFO (named pipe), not a file of" in out
    assert f"sample 'd': input file {spaced!r} does not exist" in out


def test_a_file_that_cannot_be_opened_is_named_before_any_job(tmp_path, monkeypatch):
    """Unreadable reads (no read permission) are refused with the other unusable inputs, not
    as a traceback while Snakemake plans (root reads any file, so the open is made to fail)."""
    locked = tmp_path / "locked.fa"
    locked.write_text(">r\nACGT\n")
    real_open = open

    def no_permission(path, *args, **kwargs):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_permission)
    assert missing_files({"s": [str(locked)]}) == [
        f"sample 's': input file {str(locked)!r} cannot be read (Permission denied)"
    ]


def test_a_sample_named_twice_after_a_yaml_merge_key_is_refused(tmp_path):
    """A mapping that merges an anchor (`<<: *base`) is walked like any other: the check must not
    stop there and let a sample named twice further down keep only its last file."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "base: &b {x: 1}\nother: {<<: *b, y: 2}\nsamples:\n  gut1: a.fq\n  gut1: b.fq\n"
    )
    with pytest.raises(
        SampleError, match=r"line 5: sample 'gut1' is named twice \(also on line 4\)"
    ):
        check_config_file(config)
    config.write_text("base: &b {x: 1}\nother: {<<: *b, y: 2}\nsamples:\n  gut1: a.fq\n")
    check_config_file(config)  # a merge key alone is no duplicate
