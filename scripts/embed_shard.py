"""Rule embed_shard: embed one shard with one model."""

import logging

import torch

from virnuc_core.jobs.embed_job import (
    EXIT_INTERRUPTED,
    Interrupted,
    ReferenceOutput,
    ShardInput,
    run_embed_job,
)
from virnuc_core.jobs.references import read_sample
from virnuc_core.jobs.step import run_step
from virnuc_core.settings import EmbedSettings


def main(sm) -> int:
    settings = EmbedSettings(**sm.params.settings, token_budget=sm.resources.token_budget)
    shard = ShardInput.read(
        settings.model, sm.input.sequences, sm.input.index, sm.input.sources, sm.input.plan,
        int(sm.wildcards.i),
    )  # fmt: skip
    try:
        reference = ReferenceOutput(read_sample(sm.input.validation_sample), sm.output.reference)
        run_embed_job(
            settings,
            shard,
            sm.params.work,
            sm.output.rows,
            max(0, sm.threads - 1),
            reference,
            shared=sm.resources.gpu == 0,
            gpu_limit=sm.resources.shared_gpus,
        )
    except Interrupted as stop:
        logging.error("%s; progress committed, rerun to resume", stop)
        return EXIT_INTERRUPTED[stop.signum]
    except torch.OutOfMemoryError as oom:
        logging.error(
            "CUDA out of memory (%s); progress committed. Snakemake retries with half "
            "the token budget; or lower token_budget in the config.", oom,
        )  # fmt: skip
        return 3
    return 0


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
