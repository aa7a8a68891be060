"""Step script: merge a model's shards in index order, or join both models into features.h5."""

import argparse
import logging

import h5py

from virnuc_core.fasta import read_index
from virnuc_core.merge import merge_shards, write_features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("shards", nargs="*", help="shard_<i>.h5 files of one model")
    p.add_argument("--index", help="frames.index.tsv (merging shards)")
    p.add_argument("--features", action="store_true", help="join --dnabert and --esm instead")
    p.add_argument("--dnabert")
    p.add_argument("--esm")
    p.add_argument("--output", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if a.features:
        write_features(a.dnabert, a.esm, a.output)
    else:
        index = read_index(a.index)
        per_job = ("token_budget", "device", "distinct_sequences")
        with h5py.File(a.shards[0], "r") as first:  # the shards' settings, minus the per-job ones
            attrs = {k: v for k, v in first.attrs.items() if k not in per_job}
        merge_shards(a.shards, len(index), a.output, index.ids.tolist(), attrs)
    logging.info("wrote %s", a.output)


if __name__ == "__main__":
    main()
