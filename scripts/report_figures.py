"""Step script: score histograms and per-shard embedding throughput (rule report_figures)."""

import argparse
import json
import logging

from virnuc_core import summary, throughput


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sample", required=True)
    p.add_argument("--predictions", required=True, help="prediction_results.tsv")
    p.add_argument("--summary", required=True, help="summary.tsv")
    p.add_argument("--patterns", required=True, help="JSON: embed_shard's h5, log, benchmark")
    p.add_argument("--models", required=True, nargs="+")
    p.add_argument("--shards", required=True, type=int)
    for name in ("scores_png", "throughput_png", "throughput_tsv", "throughput_html"):
        p.add_argument(f"--{name.replace('_', '-')}", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    summary.plot_scores(a.predictions, a.summary, a.scores_png)
    rows = [
        throughput.shard_throughput(j["model"], j["shard"], j["h5"], j["log"], j["benchmark"])
        for j in throughput.embed_jobs(a.sample, a.models, a.shards, json.loads(a.patterns))
    ]
    for row in rows:
        if row.tokens_per_s is None or row.wall_s is None:
            logging.warning("%s shard %d: no progress line or benchmark: NA", row.model, row.shard)
    throughput.write_throughput(rows, a.sample, a.throughput_tsv, a.throughput_html)
    throughput.plot_throughput(rows, a.throughput_png)
    logging.info("wrote %s, %s", a.scores_png, a.throughput_png)


if __name__ == "__main__":
    main()
