"""Fetch DNABERT-S and ESM-2 once into a models folder and lock them (needs the network).

    python scripts/fetch_models.py --out models [--dnabert-revision COMMIT] [--esm NAME]

Writes models/models.lock.json (path, model, source, revision, size and sha256 of every file).
Run it again to repair a folder: only what is missing or changed is fetched. Workflow runs
never download; they check the folder against the lock.
"""

import argparse
import logging
import sys

from virnuc_core.model_files import (
    DNABERT_S_REVISION,
    ESM2_NAME,
    ModelFilesError,
    fetch_models,
    read_lock,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="models", help="the models folder (default: models)")
    p.add_argument(
        "--dnabert-revision",
        default=DNABERT_S_REVISION,
        help=f"DNABERT-S commit id on the hub (default: {DNABERT_S_REVISION})",
    )
    p.add_argument("--esm", default=ESM2_NAME, help=f"fair-esm model name (default: {ESM2_NAME})")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        lock_path = fetch_models(a.out, dnabert_revision=a.dnabert_revision, esm_name=a.esm)
    except ModelFilesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for entry in read_lock(a.out)["files"]:
        print(f"{entry['sha256']}  {entry['size']:>14,d}  {entry['path']}")
    print(f"lock: {lock_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
