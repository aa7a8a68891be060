"""Embed jobs end to end against the bare model on the same batches (one GPU).

1. Generates 500-base reads (``open`` kind: all six frames kept; ``--duplicates``: the share of
   them that repeat another under a new id), runs the index stage
   (:func:`virnuc_core.data.index.index_sample`) and the shard plan
   (:func:`virnuc_core.jobs.plan.plan_shards`, one shard, with and without duplicate removal), and
   writes random-weight models (``bench/make_models.py``'s formats; ``tiny``: the built-in tiny
   models).
2. Per model and ``--backends`` label (default: the settings' own): the bare model, the job's
   encoder, packer and device loop over the shard's sequences, already tokenised and packed,
   two passes (the first meets every batch shape for the first time, as a job does).
3. The embed job itself (:func:`virnuc_core.jobs.embed_job.run_embed_job`) on that shard, once per
   ``--workers`` value (reader processes): reading by offset, tokenising in readers, packing,
   copies, checkpoint commits. Its metrics are the ones it records (``meta.json``), plus the
   steady rate between its first and last progress lines; with ``--duplicates``, once more
   with duplicate removal.

GPU idle per batch = (the job's loop seconds - the bare first pass's) / batches.

    python -m bench.embed_e2e --reads 3000 --duplicates 0.2 --workers 2 4 --out ...  # both
    python -m bench.embed_e2e --models dnabert --reads 4000 --backends padded-auto triton --out ...
    python -m bench.embed_e2e --esm tiny --dnabert tiny --reads 60 --workers 1    # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench import _harness as h
from bench.make_models import save_esm_checkpoint
from bench.make_reads import make_reads, with_duplicates, write_reads
from virnuc_core.data.index import index_sample
from virnuc_core.engine.models.dnabert_tiny import FULL_CONFIG, write_folder
from virnuc_core.jobs.embed_job import ShardInput, run_embed_job
from virnuc_core.jobs.plan import plan_shards
from virnuc_core.registry import family, load_encoder
from virnuc_core.util.fasta import read_sequences


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["dnabert", "esm"], choices=["dnabert", "esm"])
    p.add_argument("--esm", default="3B", help="ESM-2 size (8M ... 3B) or tiny")
    p.add_argument("--dnabert", default="full", choices=["full", "tiny"])
    p.add_argument("--reads", type=int, default=3000, help="reads, copies included")
    p.add_argument("--duplicates", type=float, default=0.0, help="share of the reads: copies")
    p.add_argument("--workers", type=int, nargs="+", default=[4], help="reader processes, per job")
    p.add_argument("--backends", nargs="+", help="attention backend labels (padded-auto too)")
    h.add_settings_arg(p)
    p.add_argument("--out")
    return p.parse_args(argv)


def prepare(work: Path, a: argparse.Namespace) -> dict:
    """Reads -> the index stage's files -> plans of one shard, without and with dedupe."""
    copies = round(a.reads * a.duplicates)
    reads = make_reads(a.reads - copies, 500, 500, kind="open", seed=5, prefix="r")
    write_reads(with_duplicates(reads, copies / len(reads), 5), work / "reads.fa")
    out = {k: str(work / v) for k, v in {"frames": "frames.fa", "proteins": "proteins.faa",
           "index": "frames.index.npy", "counts": "frames.counts.json"}.items()}  # fmt: skip
    counts = index_sample([str(work / "reads.fa")], 500, out)
    seqs = {m: str(work / family(m).sequences) for m in a.models}
    for dedupe in (False, True):
        d = work / f"plan_{'dedupe' if dedupe else 'all'}"
        d.mkdir()
        plan_shards(out["index"], seqs, 1, dedupe, d / "plan.json",
                    {m: d / f"{m}.sources.npy" for m in a.models})  # fmt: skip
    return {"index": out["index"], "sequences": seqs, "frames": counts.as_dict()}


def model_spec(model: str, a: argparse.Namespace, work: Path) -> str:
    """The model files the jobs load (random weights of the published architectures)."""
    if model == "esm":
        return "tiny" if a.esm == "tiny" else str(save_esm_checkpoint(a.esm, work, h.DEVICE.type))
    return "tiny" if a.dnabert == "tiny" else str(write_folder(work / "dnabert", FULL_CONFIG))


def shard(model: str, files: dict, work: Path, dedupe: bool) -> ShardInput:
    plan = work / f"plan_{'dedupe' if dedupe else 'all'}"
    sources, doc = str(plan / f"{model}.sources.npy"), str(plan / "plan.json")
    return ShardInput.read(model, files["sequences"][model], files["index"], sources, doc, 0)


def bare(settings, s: ShardInput) -> dict:
    """The job's encoder, packer and device loop over the shard's distinct sequences, already
    tokenised and packed: two passes after two warm-up batches."""
    enc = load_encoder(settings, h.DEVICE)
    tokens = enc.tokenize(read_sequences(s.sequences, *s.spans(s.distinct)))
    batches = h.job_batches(tokens, settings.token_budget)
    h.run_batches(enc.embed_packed, batches[:2])
    before = h.frames_compiled()
    first, second = (h.run_batches(enc.embed_packed, batches) for _ in range(2))
    return {"seconds": first.seconds, "batches": first.batches, "tokens": first.tokens,
            "tokens_per_s": first.tokens_per_s, "second_pass_seconds": second.seconds,
            "second_pass_tokens_per_s": second.tokens_per_s,
            "frames_compiled_while_timed": h.frames_compiled() - before,
            "packing_efficiency": first.tokens / (first.batches * settings.token_budget),
            "backend": enc.describe()["attention_backend"]}  # fmt: skip


class Lines(logging.Handler):
    """Keeps the progress lines of the virnuc loggers."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        if record.getMessage().startswith("progress:"):
            self.lines.append(record.getMessage())


def progress_point(line: str) -> tuple[int, float]:
    """(records done, seconds since the loop began) from one progress line."""
    done = int(line.split("/")[0].split()[-1])
    records_per_s = float(line.split(" records/s")[0].rsplit(", ", 1)[-1].replace(",", ""))
    return done, done / records_per_s


def job(settings, s: ShardInput, work: Path, workers: int) -> dict:
    """One embed job on the shard: its own metrics, and its steady rate."""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        keep, logger = Lines(), logging.getLogger("virnuc")
        logger.addHandler(keep)
        logger.setLevel(logging.INFO)
        start = time.perf_counter()
        try:
            run_embed_job(settings, s, f"{tmp}/work", f"{tmp}/out", workers)
        finally:
            logger.removeHandler(keep)
        total = time.perf_counter() - start
        metrics = json.loads(Path(f"{tmp}/out/meta.json").read_text())["metrics"]
    (d0, t0), (d1, t1) = (progress_point(keep.lines[i]) for i in (0, -1))
    frames = s.hi - s.lo
    return {**metrics, "workers": workers, "job_seconds_in_bench": total, "frames": frames,
            "frames_written_per_s": frames / total,
            "steady_records_per_s": (d1 - d0) / (t1 - t0) if t1 > t0 else None}  # fmt: skip


def run_model(model: str, a, files: dict, work: Path) -> list[dict]:
    """Per backend label: the bare model and the jobs."""
    spec, out = model_spec(model, a, work), []
    for label in a.backends or [None]:
        with h.backend_label(label) as backend:
            changes = [*a.set, ("progress_seconds", 0.5), ("checkpoint_every", 5000)]
            changes += [("attention_backend", backend)] if backend else []
            settings = h.job_settings(model, spec, changes)
            row = {"model": model, "backend": label or settings.attention_backend}
            try:
                s = shard(model, files, work, dedupe=False)
                row["bare"] = b = bare(settings, s)
                row["jobs"] = [job(settings, s, work, w) for w in a.workers]
                if a.duplicates:
                    row["dedupe_job"] = job(settings, shard(model, files, work, True), work,
                                            a.workers[0])  # fmt: skip
            except Exception as e:  # noqa: BLE001 - the other runs still count
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"{model} {row['backend']}: FAILED {row['error']}", flush=True)
                out.append(row)
                continue
        for j in row["jobs"]:
            j["job_over_bare"] = j["tokens_per_s"] / b["tokens_per_s"]
            j["gpu_idle_ms_per_batch"] = 1000 * (j["loop_s"] - b["seconds"]) / b["batches"]
            steady = j["steady_records_per_s"]
            j["steady_tokens_per_s"] = steady * b["tokens"] / s.distinct.size if steady else None
            print(f"{model} {row['backend']}: bare {b['tokens_per_s']:,.0f} tok/s (second pass "
                  f"{b['second_pass_tokens_per_s']:,.0f}); job with {j['workers']} readers "
                  f"{j['tokens_per_s']:,.0f} tok/s ({j['job_over_bare']:.1%} of bare), steady "
                  f"{j['steady_tokens_per_s'] or 0:,.0f}", flush=True)  # fmt: skip
        if "dedupe_job" in row:
            off, on = row["jobs"][0]["wall_s"], row["dedupe_job"]["wall_s"]
            row["dedupe_speedup_job"] = off / on
            print(f"{model}: {a.duplicates:.0%} repeated reads: job {off:.1f} s -> {on:.1f} s "
                  f"with dedupe ({off / on:.2f}x)", flush=True)  # fmt: skip
        out.append(row)
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = prepare(work, a)
        # DNABERT-S first: each measurement in a process that has not run the 3B model yet
        runs = [
            r for m in ("dnabert", "esm") if m in a.models for r in run_model(m, a, files, work)
        ]
    loops = {r["model"]: r["jobs"][0]["loop_s"] for r in runs if "jobs" in r}
    result = {"bench": "embed_e2e", "machine": h.machine_info(), "reads": a.reads,
              "duplicates": a.duplicates, "esm": a.esm, "dnabert": a.dnabert,
              "frames": files["frames"], "set": dict(a.set), "runs": runs}  # fmt: skip
    if len(loops) == 2:
        result["dnabert_over_esm_loop_time"] = loops["dnabert"] / loops["esm"]
        print(
            f"DNABERT-S loop {loops['dnabert']:.1f} s: "
            f"{result['dnabert_over_esm_loop_time']:.1%} of ESM-2's on the same frames"
        )
    h.write_json(a.out, result)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
