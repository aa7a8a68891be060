"""A plan before the GPUs start: what a sample will cost (``results/{sample}/plan.json``).

Written with the shard plan, right after the index stage: frames and tokens per model, the GPU
time expected on each GPU type from the throughputs measured in ``bench/results/`` (the table
``bench/results/throughputs.json`` names the file each figure comes from), the disk the run will
need, and each job's memory (:mod:`virnuc_core.jobs.resources`: ``job_memory_mb``; in
``job_memory_basis`` the formula, the measured figures and where they come from). The report
shows it beside what the run took. Expected GPU times are compute only (model loading and
compiling excluded) and exist only for the published architectures (ESM-2 3B, DNABERT-S size):
other models get none. So are the expected CPU times (one core, from the table's
``cpu_entries``), for a run where no GPU is visible (:func:`cpu_note` tells it at the start of
such a run).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from virnuc_core.jobs import resources
from virnuc_core.registry import FAMILIES, family
from virnuc_core.util.files import atomic_writer

log = logging.getLogger("virnuc.plan")

THROUGHPUTS = files("virnuc_core.measured").joinpath("throughputs.json")  # package data
DISK_MARGIN = 1.15  # the run's high-water mark over the final embeddings (bench/scale.py)


def _text(path) -> str:
    return (Path(path) if isinstance(path, str | os.PathLike) else path).read_text()


def measured(path: str | os.PathLike = THROUGHPUTS) -> list[dict[str, Any]]:
    """The table of measured throughputs (GPU, model, tokens/s, source file)."""
    return json.loads(_text(path))["entries"]


def measured_cpu(path: str | os.PathLike = THROUGHPUTS) -> list[dict[str, Any]]:
    """The table's measured CPU throughputs (CPU, threads, model, tokens/s, source file)."""
    return json.loads(_text(path)).get("cpu_entries", [])


def _model_plan(model: str, spec: str, shards: Mapping[str, Any], table: list[dict],
                cpu_table: list[dict]) -> dict:  # fmt: skip
    fam = family(model)
    arch = fam.architecture(spec)
    tokens = int(sum(shards["tokens"]))
    gpu_s = [
        {"gpu": e["gpu"], "seconds": round(tokens / e["tokens_per_s"], 1),
         "tokens_per_s": round(e["tokens_per_s"]), "source": e["source"]}
        for e in table if arch and e["model"] == model
    ]  # fmt: skip
    cpu_s = [
        {"cpu": e["cpu"], "threads": e["threads"], "seconds": round(tokens / e["tokens_per_s"], 1),
         "tokens_per_s": round(e["tokens_per_s"], 1), "source": e["source"]}
        for e in cpu_table if arch and e["model"] == model
    ]  # fmt: skip
    return {
        "architecture": arch,
        "distinct_sequences": int(sum(shards["distinct"])),
        "tokens": tokens,
        "tokens_estimated": bool(shards["tokens_estimated"]),
        "expected_gpu_seconds": gpu_s,
        "expected_cpu_seconds": cpu_s,
        "width": fam.published_width if arch else None,
    }


def run_plan(sample: str, shard_doc: Mapping[str, Any], models: Mapping[str, str],
             input_bytes: int, table: list[dict] | None = None,
             cpu_table: list[dict] | None = None) -> dict:  # fmt: skip
    """The plan document for ``sample`` (see the module docstring)."""
    table = measured() if table is None else table
    cpu_table = measured_cpu() if cpu_table is None else cpu_table
    frames = int(shard_doc["frames"])
    plan = {m: _model_plan(m, models[m], shard_doc["models"][m], table, cpu_table) for m in models}
    widths = [p["width"] for p in plan.values()]
    emb = frames * 4 * sum(widths) if all(widths) else None
    return {
        "sample": sample,
        "frames": frames,
        "shards": shard_doc["shards"],
        "models": plan,
        "disk": {
            "embeddings_bytes": emb,
            "high_water_bytes": None if emb is None else int(emb * DISK_MARGIN + input_bytes),
            "note": "embeddings kept once (shard files); plus the index stage's FASTA outputs",
        },
        "job_memory_mb": resources.plan_table(frames),
        "job_memory_basis": resources.basis(),
    }


def write_run_plan(path: str | os.PathLike, plan: Mapping[str, Any]) -> None:
    """Write the plan and log what it says in one line per model."""
    with atomic_writer(path) as out:
        json.dump(plan, out, indent=1)
    for model, p in plan["models"].items():
        times = [
            f"{t['seconds']:,.0f} s on an {t['gpu']} ({t['tokens_per_s']:,} tokens/s, "
            f"{t['source']})"
            for t in p["expected_gpu_seconds"]
        ] + [_cpu_time(t) for t in p.get("expected_cpu_seconds", [])]
        log.info(
            "plan: %s: %d frames, %d distinct, %s%d tokens: %s", model, plan["frames"],
            p["distinct_sequences"], "~" if p["tokens_estimated"] else "", p["tokens"],
            ", ".join(times) or "no measured throughput for this model",
        )  # fmt: skip
    disk = plan["disk"]["high_water_bytes"]
    if disk:
        log.info("plan: the run needs about %.1f GB of disk", disk / 1e9)


def duration(seconds: float) -> str:
    """``seconds`` in the unit a person reads best (s, min, h, days)."""
    for unit, size, limit in (("s", 1, 90), ("min", 60, 90), ("h", 3600, 48)):
        if seconds < limit * size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{seconds / 86400:,.1f} days"


def _cpu_time(t: Mapping[str, Any]) -> str:
    return (f"{duration(t['seconds'])} on {t['threads']} CPU core of an {t['cpu']} "
            f"({t['tokens_per_s']:,} tokens/s, {t['source']})")  # fmt: skip


def cpu_note(gpus: int, why: str, plans: Mapping[str, str | os.PathLike]) -> str:
    """What a run that asks for ``gpus`` GPUs where none is visible (``why``) is told at its
    start: the models run on the CPU, and what each sample's plan (``plans``: sample -> its
    plan.json, if made already) expects that to take."""
    parts = []
    for sample, path in plans.items():
        try:
            models = json.loads(Path(path).read_text())["models"]
        except (OSError, ValueError, KeyError):
            parts.append(f"sample {sample!r}: its plan line (when plan_shards runs) says")
            continue
        times = [
            f"{m} {duration(t['seconds'])}" for m, p in models.items()
            for t in p.get("expected_cpu_seconds", [])[:1]
        ]  # fmt: skip
        parts.append(f"sample {sample!r}: " + (", ".join(times) or "no measured CPU time"))
    starting = sorted(FAMILIES.values(), key=lambda f: -f.embed_priority)  # as the jobs start
    titles = " and ".join(f.title for f in starting)
    return (
        f"--resources gpu={gpus} asks for GPUs, but none is visible here ({why}): the embed jobs "
        f"will run {titles} on the CPU, which suits small inputs only. Expected time "
        f"on one CPU core: {'; '.join(parts)}. To use a GPU, run where one is visible."
    )
