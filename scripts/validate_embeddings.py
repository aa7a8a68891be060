"""Step script: check a sample of fast embeddings against the reference path (rule validate)."""

import argparse
import json
import logging
import sys

from virnuc_core.settings import EmbedSettings, ValidateSettings
from virnuc_core.validate import ValidationFailed
from virnuc_core.validate_job import validate_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--settings", required=True, help="EmbedSettings as JSON")
    p.add_argument("--validate", required=True, help="ValidateSettings as JSON")
    for name in ("merged", "sequences", "index", "table", "reference", "summary", "histogram"):
        p.add_argument(f"--{name}", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    outputs = {k: getattr(a, k) for k in ("table", "reference", "summary", "histogram")}
    try:
        validate_model(
            EmbedSettings.from_json(a.settings),
            ValidateSettings(**json.loads(a.validate)),
            a.merged,
            a.sequences,
            a.index,
            outputs,
        )
    except ValidationFailed as failed:
        logging.error("%s", failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
