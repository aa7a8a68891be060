"""The installed command ``virnuc-fetch-models``: fetch DNABERT-S and ESM-2 once into a models
folder and lock them (needs the network).

    virnuc-fetch-models --out models [--dnabert-revision COMMIT] [--esm NAME]

(installed with the package: ``[project.scripts]`` in pyproject.toml; also
``python -m virnuc_core.commands``).

The DNABERT-S commit is the config's dnabert_revision when you set one (pass it here too).

Writes models/models.lock.json (path, model, source, revision, size and sha256 of every file).
Run it again to repair a folder: only what is missing or changed is fetched. Workflow runs
never download; they check the folder against the lock. Where the hub cannot be reached it says
so in one line and exits 1, leaving no half-fetched folder: run it where the machine is online,
then copy the folder.
"""

from __future__ import annotations

import argparse
import logging
import sys

from virnuc_core.engine.model_files import ModelFilesError, read_lock
from virnuc_core.registry import FAMILIES, fetch_models


def _model_options(p: argparse.ArgumentParser) -> None:
    """Each family's options (the registry says which): --<model>-revision for a model a
    commit pins, --<model> NAME for one that may be fetched under another name."""
    for model, fam in FAMILIES.items():
        if fam.files.pinned:
            p.add_argument(
                f"--{model}-revision",
                help=f"{fam.title} commit id on the hub (default: the commit the folder's lock "
                "holds, or for a new folder the hub's newest; the lock records it)",
            )
        if fam.files.other_names:
            p.add_argument(
                f"--{model}",
                default=fam.published,
                help=f"{fam.files.other_names} (default: {fam.published})",
            )


def fetch_models_main(argv: list[str] | None = None) -> int:
    """Fetch and lock the models (the command's entry point); the exit status."""
    p = argparse.ArgumentParser(
        prog="virnuc-fetch-models",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--out", default="models", help="the models folder (default: models)")
    _model_options(p)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        options = vars(a)
        lock_path = fetch_models(
            a.out,
            names={m: options[m] for m in FAMILIES if m in options},
            revisions={m: options.get(f"{m}_revision") for m in FAMILIES},
        )
    except ModelFilesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for entry in read_lock(a.out)["files"]:
        print(f"{entry['sha256']}  {entry['size']:>14,d}  {entry['path']}")
    print(f"lock: {lock_path}")
    return 0


if __name__ == "__main__":
    sys.exit(fetch_models_main())
