"""Rule merge_shards: features.h5, both models' shard files mapped in record order (no copy)."""

from virnuc_core.jobs.merge import write_features
from virnuc_core.jobs.step import run_step


def main(sm) -> None:
    shards = {m: list(sm.input[m]) for m in sm.params.models}
    write_features(shards, sm.input.index, sm.input.frames, sm.output[0])


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
