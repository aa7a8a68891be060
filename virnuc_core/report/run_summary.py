"""A sample's summary as the rule ``summarize_sample`` writes it (:func:`summarize_sample`):
the per-read tables and FASTA (:mod:`virnuc_core.report.summary`), then the run summary page of
the report (sample totals checked against the index stage's counts, the settings, the calls)."""

from __future__ import annotations

import contextlib
import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence

import h5py

from virnuc_core.registry import FAMILIES
from virnuc_core.report.regions import RegionWriter
from virnuc_core.report.summary import (
    PREDICTION_COLUMNS,
    RERUN_HINT,
    SampleTotals,
    SummaryError,
    _tsv_rows,
    call_rule,
    check_min_score,
    log,
    summarize_reads,
    write_read_outputs,
)
from virnuc_core.util.files import atomic_writer


def summarize_sample(
    sample: str,
    reads: Sequence[str],
    chunk_length: int,
    classifier: str,
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    classifier_sha256: str = "",
    min_score: float | None = None,
) -> SampleTotals:
    """The summarize_sample step: ``summary.tsv``, ``viral.fa`` (when ``outputs`` has
    ``viral``), ``regions.tsv`` (when it has ``regions``) and the run summary page, from the
    sample's ``reads`` and the prediction tables. ``inputs``: ``predictions``, ``highest``,
    ``index`` (frames.index.npy), ``counts``, ``features``. ``min_score`` (null: the original
    rule) calls the chunks of these outputs, never those of the original's two tables."""
    check_min_score(min_score)
    with contextlib.ExitStack() as stack:
        regions = None
        if outputs.get("regions"):
            handle = stack.enter_context(atomic_writer(outputs["regions"]))
            regions = RegionWriter(handle, chunk_length)
        rows = summarize_reads(
            reads, chunk_length, inputs["predictions"], inputs["highest"], inputs["index"],
            min_score, regions,
        )  # fmt: skip
        totals = write_read_outputs(rows, outputs["summary"], outputs.get("viral"))
        if regions is not None:
            regions.close()
    with open(inputs["counts"]) as handle:
        check_counts(totals, json.load(handle), sample)
    settings = run_settings(
        inputs["features"], chunk_length, classifier, classifier_sha256, min_score
    )
    virus_frames = count_virus_frames(inputs["predictions"])
    write_run_summary_html(outputs["html"], sample, totals, virus_frames, settings)
    log.info(
        "%d reads, %d chunks, %d frames; %d chunks and %d reads called viral; %d reads unscored",
        totals.reads, totals.chunks, totals.frames, totals.viral_chunks, totals.viral_reads,
        totals.reads_without_frames,
    )  # fmt: skip
    return totals


_CSS = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;"
    "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .7em;text-align:left}"
    "th{background:#eef}td.n{text-align:right}.warn{color:#a00;font-weight:bold}"
)


def html_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain HTML table; cells are escaped, numbers right-aligned."""

    def cell(value: object) -> str:
        num = isinstance(value, int | float) and not isinstance(value, bool)
        return f"<td{' class=n' if num else ''}>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(map(cell, row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (inline style, no scripts)."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def _pct(part: int, whole: int) -> str:
    return f"{part:,} ({100 * part / whole:.1f}%)" if whole else f"{part:,}"


def check_counts(totals: SampleTotals, counts: Mapping[str, int], sample: str) -> None:
    """frames.counts.json (from index_fasta) must agree with what the summary counted."""
    for key in ("reads", "chunks", "frames"):
        if counts.get(key) != getattr(totals, key):
            raise SummaryError(
                f"frames.counts.json has {key}={counts.get(key)} but the FASTA and predictions "
                f"give {getattr(totals, key)} (sample {sample}): the inputs changed since "
                f"index_fasta ran; {RERUN_HINT}"
            )


def write_run_summary_html(
    path: str | os.PathLike,
    sample: str,
    totals: SampleTotals,
    frames_virus: int,
    settings: Mapping[str, object],
) -> None:
    """The sample's run summary: counts, verdict totals, settings and the top-scored reads."""
    t = totals
    counts = [
        ("reads", f"{t.reads:,}"),
        ("chunks", f"{t.chunks:,}"),
        ("frames kept (stop-free)", f"{t.frames:,}"),
        ("frames called virus", _pct(frames_virus, t.frames)),
        (
            f"chunks called viral, by {settings.get('viral calls', call_rule(None))}",
            _pct(t.viral_chunks, t.chunks),
        ),
        ("reads called viral (any chunk viral)", _pct(t.viral_reads, t.reads)),
        ("reads with no kept frame (not scored)", _pct(t.reads_without_frames, t.reads)),
    ]
    body = "<h2>Counts</h2>" + html_table(("", "value"), counts)
    if any(str(v) == "tiny" for v in settings.values()):
        body += "<p class=warn>Tiny random models (demo): these predictions are meaningless.</p>"
    body += "<h2>Settings</h2>" + html_table(("setting", "value"), settings.items())
    top = [(r.read_id, r.length, r.chunks, r.viral_chunks, r.max_virus_score) for r in t.best()]
    body += f"<h2>Top {len(top)} reads by virus score</h2>" + html_table(
        ("read", "length", "chunks", "viral chunks", "max virus score"), top
    )
    with atomic_writer(path) as out:
        out.write(html_page(f"Run summary: {sample}", body))


def count_virus_frames(predictions_tsv: str | os.PathLike) -> int:
    """Frames whose Prediction is ``virus``."""
    return sum(row[1] == "virus" for row in _tsv_rows(predictions_tsv, PREDICTION_COLUMNS))


def run_settings(
    features_h5: str | os.PathLike, chunk_length: int, classifier: str,
    classifier_sha256: str = "", min_score: float | None = None,
) -> dict:  # fmt: skip
    """The settings a reader of the summary needs, from features.h5's attributes, and the rule
    that called the chunks (:func:`call_rule`)."""
    with h5py.File(features_h5, "r") as f:
        attrs = dict(f.attrs)
    out: dict[str, object] = {"chunk length": str(chunk_length), "classifier": classifier}
    out["viral calls"] = call_rule(min_score)
    if classifier_sha256:
        out["classifier sha256"] = classifier_sha256
    for model in FAMILIES:
        for key in ("model_spec", "precision", "encoder.attention_backend",
                    "encoder.weights_sha256"):  # fmt: skip
            if f"{model}.{key}" in attrs:
                out[f"{model} {key.removeprefix('encoder.')}"] = str(attrs[f"{model}.{key}"])
    return out
