"""Step script: per-read summary, viral reads and the run summary page (rule summarize_sample)."""

import argparse
import json
import logging
import sys

from virnuc_core import summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sample", required=True)
    p.add_argument("--fasta", required=True, help="the sample's input FASTA")
    p.add_argument("--chunk-length", required=True, type=int)
    p.add_argument("--classifier", required=True, help="the classifier setting (for the page)")
    for name in ("counts", "features", "predictions", "highest", "summary", "html"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--viral-fasta", help="write the reads called viral here (optional)")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        reads = summary.summarize_reads(a.fasta, a.chunk_length, a.predictions, a.highest)
        totals = summary.write_read_outputs(reads, a.summary, a.viral_fasta)
        with open(a.counts) as handle:
            summary.check_counts(totals, json.load(handle), a.sample)
    except summary.SummaryError as err:
        logging.error("%s", err)
        return 1
    settings = summary.run_settings(a.features, a.chunk_length, a.classifier)
    virus_frames = summary.count_virus_frames(a.predictions)
    summary.write_run_summary_html(a.html, a.sample, totals, virus_frames, settings)
    logging.info(
        "%d reads, %d chunks, %d frames; %d chunks and %d reads called viral; %d reads unscored",
        totals.reads, totals.chunks, totals.frames, totals.viral_chunks, totals.viral_reads,
        totals.reads_without_frames,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
