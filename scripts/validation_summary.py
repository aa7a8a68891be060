"""Rule validation_summary: both models' validation, and the verdict agreement."""

import logging

from virnuc_core.jobs.step import run_step
from virnuc_core.jobs.validate_job import summarize


def main(sm) -> None:
    result = summarize(
        sm.input.features, list(sm.input.references), list(sm.input.summaries), sm.output[0],
        sm.params.classifier, sm.params.classifier_sha256,
    )  # fmt: skip
    logging.getLogger("virnuc.validate").info("validation summary: %s", result)


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
