"""What a finished run tells its user (virnuc_core.report.run_notes): the console's last lines, the
report command, and the demo's notice. The workflow's own run is checked in test_report.py."""

from __future__ import annotations

import pytest

from virnuc_core.report.run_notes import (
    NOTICE_NAME,
    closing_lines,
    directory,
    report_command,
    tiny_settings,
    write_demo_notice,
)

REPORT = "snakemake --configfile my.yaml --report report.html"


@pytest.mark.parametrize(
    "argv, command, where",
    [
        ([], "snakemake --report report.html", None),
        (
            ["--configfile", "my.yaml", "--profile", "profiles/slurm", "--cores", "all"],
            "snakemake --configfile my.yaml --profile profiles/slurm --report report.html",
            None,
        ),
        (  # a list option takes every word up to the next option, as Snakemake's parser does
            ["-s", "../virnuc/Snakefile", "-d", "run 1", "--configfiles", "a.yaml", "b.yaml",
             "-j", "4", "--config", "chunk_length=300", "classifier=300_model.pth", "-n"],
            "snakemake -s ../virnuc/Snakefile -d 'run 1' --configfiles a.yaml b.yaml "
            "--config chunk_length=300 classifier=300_model.pth --report report.html",
            "run 1",
        ),
        (
            ["--directory=work", "--workflow-profile=none", "--rerun-incomplete", "results/x"],
            "snakemake --directory=work --workflow-profile=none --report report.html",
            "work",
        ),
    ],
)  # fmt: skip
def test_report_command_keeps_what_says_which_workflow_where_and_which_config(argv, command, where):
    assert report_command(argv) == command
    assert directory(argv) == where


def test_tiny_settings_name_the_keys_set_to_tiny():
    assert tiny_settings({"dnabert": "tiny", "esm": "tiny"}, "tiny") == [
        "models.dnabert", "models.esm", "classifier"
    ]  # fmt: skip
    assert tiny_settings({"dnabert": "zhihan1996/DNABERT-S", "esm": "tiny"}, "500_model.pth") == [
        "models.esm"
    ]
    assert tiny_settings({"dnabert": "zhihan1996/DNABERT-S", "esm": "e.pt"}, None) == []


def _lines(targets, *, classifier="500_model.pth", tiny=(), prefix="", there=None, samples=None):
    samples = samples or ["gut1", "gut2"]
    there = set(targets) if there is None else there
    return closing_lines(
        samples, targets, classifier=classifier, tiny=list(tiny), command=REPORT,
        prefix=prefix, exists=there.__contains__,
    )  # fmt: skip


ALL = {
    f"results/{s}/{f}"
    for s in ("gut1", "gut2")
    for f in ("summary.tsv", "features.h5", "validation/summary.json", "viral.fa")
}


def test_a_full_run_lists_each_summary_then_the_report_command():
    lines = _lines(ALL)
    assert lines == [
        "virnuc finished. Per-read results (one row per read; every column: docs/outputs.md):",
        "  results/gut1/summary.tsv",
        "  results/gut2/summary.tsv",
        f"The report (report.html, one self-contained file): {REPORT}",
    ]
    assert not any("DEMO" in line or "MEANINGLESS" in line for line in lines)


def test_paths_start_with_the_run_directory_when_one_was_given():
    lines = _lines(ALL, prefix="runs/a/")
    assert lines[1] == "  runs/a/results/gut1/summary.tsv"
    assert lines[-1].startswith("The report (runs/a/report.html,")


def test_without_a_classifier_it_names_the_embeddings_and_validation():
    targets = {p for p in ALL if "summary.tsv" not in p and "viral" not in p}
    lines = _lines(targets, classifier=None)
    assert lines[0].startswith("virnuc finished: no classifier is set")
    assert "  results/gut2/features.h5" in lines
    assert "  results/gut1/validation/summary.json" in lines
    assert any("300_model.pth or 500_model.pth" in line for line in lines)
    assert not any("summary.tsv" in line for line in lines)


def test_a_run_of_one_step_or_of_nothing_made_says_nothing():
    assert _lines({"results/gut1/shards/plan.json"}) == []
    assert _lines(ALL, there=set()) == []  # targets that are not there: nothing claimed


def test_summaries_named_are_those_among_the_targets():
    lines = _lines({"results/gut2/summary.tsv"}, there=ALL)
    assert [line for line in lines if "summary.tsv" in line] == ["  results/gut2/summary.tsv"]


def test_many_samples_are_counted_after_the_first_ten():
    samples = [f"s{i:02d}" for i in range(12)]
    lines = _lines({f"results/{s}/summary.tsv" for s in samples}, samples=samples)
    assert lines[10] == "  results/s09/summary.tsv"
    assert lines[11] == "  ... and 2 more samples: results/<sample>/summary.tsv"


def test_a_demo_run_ends_saying_its_calls_are_meaningless():
    lines = _lines({"results/gut1/summary.tsv"}, tiny=["models.esm", "classifier"], prefix="w/")
    assert lines[-1].startswith("DEMO RUN: models.esm and classifier are 'tiny'")
    assert "MEANINGLESS" in lines[-1] and lines[-1].endswith(f"See w/results/gut1/{NOTICE_NAME}.")
    lines = _lines(ALL, classifier=None, tiny=["models.dnabert"])
    assert lines[-1].startswith("DEMO RUN: models.dnabert is 'tiny'")


def test_demo_notice_is_written_and_a_real_run_removes_an_old_one(tmp_path):
    notice = tmp_path / NOTICE_NAME
    write_demo_notice(notice, ["models.dnabert", "models.esm", "classifier"])
    text = notice.read_text()
    assert text.startswith("DEMO RUN: models.dnabert, models.esm and classifier are 'tiny'")
    assert "MEANINGLESS" in text and "300_model.pth or 500_model.pth" in text
    assert "virnuc-fetch-models --out models" in text
    write_demo_notice(notice, [])  # the same sample run again with real models
    assert not notice.exists()
    write_demo_notice(notice, [])  # and again: nothing to remove, no error
