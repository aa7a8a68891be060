"""Rule plan_shards: cut each model's frames into shards of equal distinct work; the run plan."""

import os

from virnuc_core.jobs.plan import plan_shards, read_plan
from virnuc_core.jobs.run_plan import run_plan, write_run_plan
from virnuc_core.jobs.step import run_step


def main(sm) -> None:
    models = list(sm.params.models)
    plan_shards(
        sm.input.index,
        dict(sm.params.sequences),
        sm.params.shards,
        sm.params.dedupe,
        sm.output.plan,
        dict(zip(models, sm.output.sources, strict=True)),
    )
    size = sum(os.path.getsize(p) for p in sm.input)
    plan = run_plan(sm.wildcards.sample, read_plan(sm.output.plan), sm.params.specs, size)
    write_run_plan(sm.output.run_plan, plan)


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
