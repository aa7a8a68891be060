"""Rule summarize_sample: per-read summary, viral reads and the run summary page."""

import _repo  # noqa: F401 - the repository's virnuc_core first on sys.path

from virnuc_core.pairs import read_sources
from virnuc_core.step import run_step
from virnuc_core.summary import summarize_sample


def main(sm) -> None:
    reads = read_sources(list(sm.input.reads), sm.params.layout)  # mates as <pair>/1, <pair>/2
    summarize_sample(
        sm.wildcards.sample, reads, sm.params.chunk_length, sm.params.classifier,
        dict(sm.input.items()), dict(sm.output.items()), sm.params.classifier_sha256,
    )  # fmt: skip


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
