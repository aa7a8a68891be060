"""Rule summarize_sample: per-read summary, viral reads and the run summary page."""

from pathlib import Path

from virnuc_core.data.pairs import read_sources
from virnuc_core.jobs.step import run_step
from virnuc_core.report.run_notes import NOTICE_NAME, write_demo_notice
from virnuc_core.report.run_summary import summarize_sample


def main(sm) -> None:
    reads = read_sources(list(sm.input.reads), sm.params.layout)  # mates as <pair>/1, <pair>/2
    outputs = dict(sm.output.items())
    summarize_sample(
        sm.wildcards.sample, reads, sm.params.chunk_length, sm.params.classifier,
        dict(sm.input.items()), outputs, sm.params.classifier_sha256, sm.params.min_score,
    )  # fmt: skip
    # The demo's notice beside summary.tsv; a real run removes one an earlier demo left there.
    notice = outputs.get("notice", Path(outputs["summary"]).with_name(NOTICE_NAME))
    write_demo_notice(notice, list(sm.params.tiny))


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
