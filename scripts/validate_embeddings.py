"""Rule validate_embeddings: check a sample of fast embeddings against the reference path."""

import _repo  # noqa: F401 - the repository's virnuc_core first on sys.path

from virnuc_core.settings import EmbedSettings, ValidateSettings
from virnuc_core.step import run_step
from virnuc_core.validate_job import validate_model


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
