"""Step script: split the frames into length-balanced shards (rule split_strides)."""

import argparse
import logging
from pathlib import Path

from virnuc_core.fasta import read_index
from virnuc_core.shards import split_strides, write_shard


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--index", required=True, help="frames.index.tsv")
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--outdir", required=True, help="writes shard_<i>.txt here")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for i, records in enumerate(split_strides(read_index(a.index).aa_length, a.shards)):
        write_shard(Path(a.outdir) / f"shard_{i}.txt", records)
        logging.info("shard %d: %d records", i, len(records))


if __name__ == "__main__":
    main()
