"""Step script: embed one shard with one model (rule embed_shard). Wires arguments only."""

import argparse
import logging
import sys

import torch

from virnuc_core.embed_job import EXIT_INTERRUPTED, Interrupted, run_embed_job
from virnuc_core.settings import EmbedSettings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--settings", required=True, help="EmbedSettings as JSON")
    p.add_argument("--sequences", required=True, help="frames.fa (dnabert) or proteins.faa (esm)")
    p.add_argument("--index", required=True, help="frames.index.tsv")
    p.add_argument("--shard", required=True, help="shard_<i>.txt (record numbers)")
    p.add_argument("--work", required=True, help="checkpoint directory (outside the outputs)")
    p.add_argument("--output", required=True, help="the shard's HDF5 output")
    p.add_argument("--token-budget", type=int, help="overrides the settings' (retries halve it)")
    p.add_argument("--workers", type=int, default=4, help="reader processes")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = EmbedSettings.from_json(a.settings)
    if a.token_budget:
        settings = settings.replace_budget(a.token_budget)
    try:
        run_embed_job(settings, a.sequences, a.index, a.shard, a.work, a.output, a.workers)
    except Interrupted as stop:
        logging.error("%s; progress committed, rerun to resume", stop)
        return EXIT_INTERRUPTED[stop.signum]
    except torch.OutOfMemoryError as oom:
        logging.error(
            "CUDA out of memory (%s); progress committed. Snakemake retries with half "
            "the token budget; or lower token_budget in the config.",
            oom,
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
