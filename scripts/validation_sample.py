"""Rule validation_sample: draw the frames both models' validation recomputes."""

import _repo  # noqa: F401 - the repository's virnuc_core first on sys.path

from virnuc_core.references import write_sample
from virnuc_core.settings import ValidateSettings
from virnuc_core.step import run_step


def main(sm) -> None:
    checks = ValidateSettings(**sm.params.validate)
    write_sample(sm.input.index, checks.n, checks.seed, sm.output[0])


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
