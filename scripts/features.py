"""Rule features: features.h5, both models' shard files mapped in record order (no copy)."""

from virnuc_core.features import write_features
from virnuc_core.step import run_step


def main(sm) -> None:
    shards = {"dnabert": list(sm.input.dnabert), "esm": list(sm.input.esm)}
    write_features(shards, sm.input.index, sm.input.frames, sm.output[0])


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
