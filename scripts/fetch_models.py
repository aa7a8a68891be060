"""Fetch DNABERT-S and ESM-2 once into a models folder and lock them (needs the network).

    python scripts/fetch_models.py --out models [--dnabert-revision COMMIT] [--esm NAME]

The DNABERT-S commit is the config's dnabert_revision when you set one (pass it here too).

Writes models/models.lock.json (path, model, source, revision, size and sha256 of every file).
Run it again to repair a folder: only what is missing or changed is fetched. Workflow runs
never download; they check the folder against the lock. Where the hub cannot be reached it says
so in one line and exits 1, leaving no half-fetched folder: run it where the machine is online,
then copy the folder.
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this repository's virnuc_core
from virnuc_core.model_files import ESM2_NAME, ModelFilesError, fetch_models, read_lock  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="models", help="the models folder (default: models)")
    p.add_argument(
        "--dnabert-revision",
        help="DNABERT-S commit id on the hub (default: the commit the folder's lock holds, or "
        "for a new folder the hub's newest; the lock records it)",
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
