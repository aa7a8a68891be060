"""Rule finalize_shard: a shard's HDF5 file from its embed job's rows (and earlier shards)."""

from virnuc_core.jobs.finalize import finalize_shard
from virnuc_core.jobs.plan import model_plan, read_plan
from virnuc_core.jobs.step import run_step


def main(sm) -> None:
    plan = model_plan(read_plan(sm.input.plan), sm.wildcards.model)
    earlier = [(*plan.shard(j), path) for j, path in enumerate(sm.input.earlier)]
    finalize_shard(sm.input.rows, sm.input.sources, earlier, sm.output[0])


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
