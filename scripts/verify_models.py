"""Rule verify_models: every file of the models folder against its lock (size and sha256)."""

import json

from virnuc_core.engine.model_files import verify_models
from virnuc_core.jobs.step import run_step
from virnuc_core.util.files import atomic_writer


def main(sm) -> None:
    lock = verify_models(sm.params.folder)
    with atomic_writer(sm.output[0]) as out:
        json.dump({e["path"]: e["sha256"] for e in lock["files"]}, out, indent=1)


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
