"""Rule predict: classify every frame and write the verdict tables."""

import logging

from virnuc_core.jobs.step import run_step
from virnuc_core.report.predictions import predict_sample


def main(sm) -> None:
    frames, virus = predict_sample(
        sm.input.features, sm.params.classifier, sm.output.frames, sm.output.chunks
    )
    logging.getLogger("virnuc.predict").info("%d frames classified, %d virus", frames, virus)


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
