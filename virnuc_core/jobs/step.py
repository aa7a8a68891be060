"""What every step script shares: its log, and what a failure looks like.

Snakemake runs ``scripts/*.py`` through ``script:`` with the ``snakemake`` object (no shell, so
no path or value is ever interpreted as a command). :func:`run_step` sends INFO and above to the
rule's log file and WARNING and above also to the console, turns the errors the library raises
for bad inputs into one clear line (no traceback) and an exit code, and exits.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from virnuc_core.util.files import no_space_errno

# Errors a user can act on: the message says what and where (our own error classes, and bad
# values or missing files). Anything else is a bug: traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def _for_the_user(err: BaseException) -> bool:
    return isinstance(err, USER_ERRORS) or type(err).__module__.startswith("virnuc_core.")


def no_space_message(err: BaseException | None) -> str | None:
    """What to tell when ``err`` (or an error it was raised from or during) is a full disk or
    quota: the file being written, and what to do; None for any other error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        code = no_space_errno(err)
        if code is not None:
            what = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
            path = err.filename if isinstance(err, OSError) else None
            if path is None:  # HDF5's message names the file
                found = re.search(r"filename = '([^']*)'", str(err))
                path = found.group(1) if found else None
            where = f" while writing {os.fspath(path)!r}" if path is not None else ""
            return f"{what}{where}: free space and run the same command again"
        err = err.__cause__ or err.__context__
    return None


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
        full = no_space_message(err)
        if full:  # a full disk is not a bug: what was being written, and what to do
            logging.getLogger("virnuc").error("rule %s: %s", name, full)
        elif _for_the_user(err):
            logging.getLogger("virnuc").error("rule %s: %s", name, err)
        else:
            logging.getLogger("virnuc").exception("rule %s failed (a bug: please report it)", name)
        code = 1
    logging.shutdown()
    sys.exit(code)
