"""Rule predict: classify every frame and write the verdict tables."""

import logging

import _repo  # noqa: F401 - the repository's virnuc_core first on sys.path

from virnuc_core.predictions import predict_sample
from virnuc_core.step import run_step


def main(sm) -> None:
    frames, virus = predict_sample(
        sm.input.features, sm.params.classifier, sm.output.frames, sm.output.chunks
    )
    logging.getLogger("virnuc.predict").info("%d frames classified, %d virus", frames, virus)


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
