"""Rule features: features.h5, both models' shard files mapped in record order (no copy)."""

import _repo  # noqa: F401 - the repository's virnuc_core first on sys.path

from virnuc_core.features import write_features
from virnuc_core.step import run_step


def main(sm) -> None:
    shards = {m: list(sm.input[m]) for m in sm.params.models}
    write_features(shards, sm.input.index, sm.input.frames, sm.output[0])


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
