"""Rule validation_sample: draw the frames both models' validation recomputes."""

from virnuc_core.jobs.references import write_sample
from virnuc_core.jobs.step import run_step
from virnuc_core.settings import ValidateSettings


def main(sm) -> None:
    checks = ValidateSettings(**sm.params.validate)
    write_sample(sm.input.index, checks.n, checks.seed, sm.output[0])


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
