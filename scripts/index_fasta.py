"""Rule index_fasta: chunk + six-frame selection of one sample's reads."""

from virnuc_core.data.index import index_sample
from virnuc_core.data.pairs import read_sources
from virnuc_core.jobs.step import run_step


def main(sm) -> None:
    sources = read_sources(list(sm.input.reads), sm.params.layout)  # files, or mate pairs
    index_sample(sources, sm.params.chunk_length, dict(sm.output.items()))


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
