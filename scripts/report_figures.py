"""Rule report_figures: score histograms and per-shard embedding throughput."""

import json

from virnuc_core.jobs.step import run_step
from virnuc_core.report import figures, throughput


def main(sm) -> None:
    figures.plot_scores(sm.input.predictions, sm.input.summary, sm.output.scores)
    rows = [throughput.shard_throughput(path) for path in sm.input.shards]
    with open(sm.input.plan) as handle:
        plan = json.load(handle)
    throughput.write_throughput(
        rows, sm.wildcards.sample, sm.output.throughput_tsv, sm.output.throughput_html, plan
    )
    throughput.plot_throughput(rows, sm.output.throughput_png)


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
