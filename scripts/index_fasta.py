"""Step script: chunk + six-frame selection of one sample's FASTA (rule index_fasta)."""

import argparse
import json
import logging
import sys

from virnuc_core.fasta import FastaError, read_fasta, write_frames
from virnuc_core.files import atomic_writer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fasta", required=True, help="input reads (FASTA, plain or gzip)")
    p.add_argument("--chunk-length", type=int, required=True, choices=(300, 500))
    p.add_argument("--frames", required=True, help="frames.fa output")
    p.add_argument("--proteins", required=True, help="proteins.faa output")
    p.add_argument("--index", required=True, help="frames.index.tsv output")
    p.add_argument("--counts", required=True, help="frames.counts.json output")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        counts = write_frames(read_fasta(a.fasta), a.chunk_length, a.frames, a.proteins, a.index)
    except FastaError as bad:
        logging.error("%s\nFix the input file and run Snakemake again.", bad)
        return 2
    with atomic_writer(a.counts) as out:
        json.dump(counts.as_dict(), out, indent=2)
    logging.info("%s", counts.as_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
