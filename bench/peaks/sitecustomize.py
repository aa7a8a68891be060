"""Exact peak memory of every Snakemake script job, for ``bench/scale.py`` (not used by the
workflow). Snakemake's benchmark files sample RSS every 0.5 s or more, summed over the job's
processes: a short job's peak can fall between samples, and pages its reader processes share
with it count twice. This file, put on PYTHONPATH by the bench only, makes each script job
write, at exit, its rule and the kernel's peaks into ``$VIRNUC_BENCH_PEAKS/<pid>.json``: its own
process's high-water mark (VmHWM, reset at exec; getrusage's own peak is not: it keeps the
forked Snakemake's), and its largest child's (getrusage: a reader process, counting the pages
it shares with the job, so the sum of the two is an upper bound)."""

import atexit
import json
import os
import resource
import sys

_FOLDER, _PID = os.environ.get("VIRNUC_BENCH_PEAKS"), os.getpid()


def _hwm_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def _write() -> None:
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    if job is None or os.getpid() != _PID:  # Snakemake itself, or a forked reader
        return
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    record = {
        "rule": job.rule,
        "wildcards": dict(job.wildcards.items()),
        "max_rss_mb": _hwm_mb(),
        "children_max_rss_mb": kids.ru_maxrss / 1024,
        "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
    }
    with open(os.path.join(_FOLDER, f"{_PID}.json"), "w") as out:
        json.dump(record, out)


if _FOLDER:
    atexit.register(_write)
