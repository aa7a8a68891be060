"""What every step script shares: its log, and what a failure looks like.

Snakemake runs ``scripts/*.py`` through ``script:`` with the ``snakemake`` object (no shell, so
no path or value is ever interpreted as a command). :func:`run_step` sends INFO and above to the
rule's log file and WARNING and above also to the console, turns the errors the library raises
for bad inputs into one clear line (no traceback) and an exit code, and exits.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

# Errors a user can act on: the message says what and where (our own error classes, and bad
# values or missing files). Anything else is a bug: traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def _for_the_user(err: BaseException) -> bool:
    return isinstance(err, USER_ERRORS) or type(err).__module__.startswith("virnuc_core.")


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def setup_logging(log_path: str | None) -> None:
    """INFO to ``log_path`` (if any), WARNING and above to stderr (the console)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    if log_path:  # the console gets what needs a look, and the run plan (before the GPUs start)
        console.addFilter(lambda r: r.levelno >= logging.WARNING or r.name == "virnuc.plan")
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(console)
    if log_path:
        file = logging.FileHandler(log_path, mode="a")  # a resumed job keeps the first attempt
        file.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(file)


def limit_threads(threads: int) -> None:
    """Compute on at most ``threads`` cores (the job's share). PyTorch's default, every core of
    the machine in every job, makes parallel jobs fight: on 2 loaded cores one small attention
    call took 40-90 ms with 2 threads against 2-7 ms with 1."""
    threads = max(1, int(threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def run_step(snakemake: Any, main: Callable[[Any], int | None]) -> None:
    """Run ``main(snakemake)`` with the rule's log set up and its thread share applied; exit
    with its code (0 for None)."""
    setup_logging(snakemake.log[0] if len(snakemake.log) else None)
    limit_threads(snakemake.threads)
    name = getattr(snakemake, "rule", "step")
    try:
        code = main(snakemake) or 0
    except Exception as err:
        if _for_the_user(err):
            logging.getLogger("virnuc").error("rule %s: %s", name, err)
        else:
            logging.getLogger("virnuc").exception("rule %s failed (a bug: please report it)", name)
        code = 1
    logging.shutdown()
    sys.exit(code)
