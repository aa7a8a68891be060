"""Rule validate_embeddings: check a sample of fast embeddings against the reference path."""

from virnuc_core.jobs.step import run_step
from virnuc_core.jobs.validate_job import validate_model
from virnuc_core.settings import EmbedSettings, ValidateSettings


def main(sm) -> None:
    validate_model(
        EmbedSettings(**sm.params.settings),
        ValidateSettings(**sm.params.validate),
        list(sm.input.shards),
        sm.input.sequences,
        sm.input.index,
        sm.input.frames,
        {k: sm.output[k] for k in ("table", "reference", "summary", "histogram")},
        sample=sm.input.sample,
        references=list(sm.input.references),
    )


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
