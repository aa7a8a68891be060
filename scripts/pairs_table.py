"""Rule pairs_table: one row per pair of a paired sample, from its summary.tsv."""

import _repo  # noqa: F401 - the repository's virnuc_core first on sys.path

from virnuc_core.pair_table import write_pair_table
from virnuc_core.step import run_step


def main(sm) -> None:
    write_pair_table(sm.input.summary, sm.output.pairs)


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
