"""Step script: combine the validation summaries; verdict agreement with a classifier."""

import argparse
import logging

from virnuc_core.validate_job import summarize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--features", required=True)
    p.add_argument("--references", nargs="+", required=True)
    p.add_argument("--summaries", nargs="+", required=True)
    p.add_argument("--classifier", default=None, help="classifier file, or 'tiny'")
    p.add_argument("--output", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result = summarize(a.features, a.references, a.summaries, a.output, a.classifier)
    logging.info("validation summary: %s", result)


if __name__ == "__main__":
    main()
