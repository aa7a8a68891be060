"""Rule pairs_table: one row per pair of a paired sample, from its summary.tsv."""

from virnuc_core.jobs.step import run_step
from virnuc_core.report.pair_table import write_pair_table


def main(sm) -> None:
    write_pair_table(sm.input.summary, sm.output.pairs)


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
