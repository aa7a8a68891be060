"""Step script: split the frames into length-balanced shards (rule split_strides)."""

import argparse
import logging
from pathlib import Path

from virnuc_core.dedupe import first_occurrences, shared_groups
from virnuc_core.fasta import read_index
from virnuc_core.shards import split_strides, write_shard


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--index", required=True, help="frames.index.tsv")
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--outdir", required=True, help="writes shard_<i>.txt here")
    p.add_argument("--frames", help="frames.fa: with --proteins, find duplicate sequences")
    p.add_argument("--proteins", help="proteins.faa")
    a = p.parse_args()
    if bool(a.frames) != bool(a.proteins):
        p.error("--frames and --proteins go together (duplicate removal needs both)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    index = read_index(a.index)
    sources = None
    if a.frames and a.proteins:
        sources = {
            "dnabert": first_occurrences(a.frames, index.nt_offset, index.nt_length),
            "esm": first_occurrences(a.proteins, index.aa_offset, index.aa_length),
        }
        for model, first in sources.items():
            distinct = int((first == index.record).sum())
            logging.info("%s: %d distinct sequences of %d frames", model, distinct, len(index))
    groups = None if sources is None else shared_groups(*sources.values())
    for i, records in enumerate(split_strides(index.aa_length, a.shards, groups)):
        columns = None if sources is None else {m: s[records] for m, s in sources.items()}
        write_shard(Path(a.outdir) / f"shard_{i}.txt", records, columns)
        logging.info("shard %d: %d records", i, len(records))


if __name__ == "__main__":
    main()
