"""End-to-end embed_shard throughput vs the bare model on the same batches (one GPU).

1. Generates reads (``open`` kind: all six frames kept), runs the index stage (chunk + six-frame),
   and writes a random-weight ESM-2 checkpoint (bench/make_models.py's format).
2. Bare model: the shard's proteins tokenized and packed ahead of time, batches already on the
   GPU, ``embed_packed`` timed back to back (CUDA-synchronised): the GPU's own rate.
3. End to end: :func:`virnuc_core.embed_job.run_embed_job` on the same shard: reading by offset in
   DataLoader workers, tokenizing, packing, pinned copies on a side stream, pooling, checkpoint
   commits and the final HDF5 file. Its rate is records over the loop's wall time.

GPU idle per batch = (end-to-end loop time - bare compute time) / batches.

4. With ``--duplicates F``, a fraction F of the reads are copies of others (under new ids), and
   the end-to-end job runs twice: every frame embedded, then with duplicate removal (the shard
   file says which record each copies, as split_strides writes it). Job seconds and frames
   written per second are compared.

5. With ``--dnabert-backends``, the DNABERT-S job runs once per attention backend
   (``padded-auto``: the padded backend with SDPA choosing its kernel, as before round 2), and
   its bare rate is taken over two passes: the first meets every batch shape for the first time
   (as a job does), the second does not. ``--no-esm`` leaves ESM-2 out.

    python bench/embed_e2e.py --esm 3B --reads 6000 --out bench/results/embed_e2e_h100.json
    python bench/embed_e2e.py --esm 3B --reads 3000 --compile --duplicates 0.2 --out ...
    python bench/embed_e2e.py --no-esm --dnabert full --reads 25000 \
        --dnabert-backends padded-auto padded triton --out ...      # DNABERT-S first pass vs steady
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mfu  # noqa: E402
from make_models import save_esm_checkpoint  # noqa: E402
from make_reads import make_reads  # noqa: E402
from virnuc_core.shards import write_shard  # noqa: E402

from virnuc_core import attention  # noqa: E402
from virnuc_core.dedupe import first_occurrences  # noqa: E402
from virnuc_core.embed_job import run_embed_job, sequence_columns  # noqa: E402
from virnuc_core.fasta import FastaRecord, read_index, read_sequences, write_frames  # noqa: E402
from virnuc_core.models import load_encoder  # noqa: E402
from virnuc_core.models.dnabert_tiny import FULL_CONFIG, TINY_CONFIG, write_folder  # noqa: E402
from virnuc_core.packing import make_batch, pack_ffd  # noqa: E402
from virnuc_core.settings import EmbedSettings  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a smoke run only


def prepare(work: Path, reads: int, duplicates: float) -> tuple[Path, Path, int]:
    """Reads (a ``duplicates`` fraction of them copies) -> frames.fa, proteins.faa, index, and
    two shards holding every frame: ``shard.txt`` plain, ``shard_dedupe.txt`` with sources."""
    n_copies = round(reads * duplicates)
    recs = make_reads(reads - n_copies, 500, 500, kind="open", seed=5, prefix="r")
    rng = np.random.default_rng(5)
    recs += [(f"copy{i}", recs[j][1]) for i, j in enumerate(rng.integers(0, len(recs), n_copies))]
    records = (FastaRecord(h.split()[0], s, 2 * i + 1) for i, (h, s) in enumerate(recs))
    counts = write_frames(
        records, 500, work / "frames.fa", work / "proteins.faa", work / "index.tsv"
    )
    table = read_index(work / "index.tsv")
    write_shard(work / "shard.txt", table.record)
    first = first_occurrences(work / "proteins.faa", table.aa_offset, table.aa_length)
    write_shard(work / "shard_dedupe.txt", table.record, {"esm": first})
    return work / "proteins.faa", work / "index.tsv", counts.frames


def bare_rate(settings: EmbedSettings, sequences: Path, index: Path) -> dict:
    """The model alone: pre-packed batches already on the GPU, embedded back to back."""
    enc = load_encoder(settings, DEVICE)
    table = read_index(index)
    offsets, lengths = sequence_columns(table, settings.model)
    tokens = enc.tokenize(read_sequences(sequences, offsets, lengths))
    groups = pack_ffd([len(t) for t in tokens], settings.token_budget)
    batches = [make_batch([tokens[i] for i in g]).to(DEVICE) for g in groups]
    for b in batches[:2]:
        enc.embed_packed(b)
    mfu._sync()
    compiled_before = torch._dynamo.utils.counters["frames"]["ok"]
    passes = []
    for _ in range(2):  # the first pass meets each batch shape for the first time
        start = time.perf_counter()
        for b in batches:
            b.cache.clear()  # layouts built per batch, as in a job
            enc.embed_packed(b)
        mfu._sync()
        passes.append(time.perf_counter() - start)
    seconds, backend = passes[0], enc.backend
    recompiled = torch._dynamo.utils.counters["frames"]["ok"] - compiled_before
    n_tokens = sum(len(t) for t in tokens)
    n_batches = len(batches)
    fill = n_tokens / (n_batches * settings.token_budget)
    del enc, batches
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return {"seconds": seconds, "batches": n_batches, "tokens": n_tokens,
            "frames_compiled_while_timed": recompiled, "backend": backend,
            "tokens_per_s": n_tokens / seconds, "second_pass_seconds": passes[1],
            "second_pass_tokens_per_s": n_tokens / passes[1],
            "packing_efficiency": fill}  # fmt: skip


def e2e_rate(settings, proteins, index, shard, work: Path, n: int, workers: int = 4) -> dict:
    """run_embed_job on the whole shard; the loop's time comes from its progress log (tokens/s:
    tokens embedded, so copies of a duplicate are not counted)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    keep = Keep()
    logging.getLogger("virnuc").addHandler(keep)
    logging.getLogger("virnuc").setLevel(logging.INFO)
    start = time.perf_counter()
    run_embed_job(settings, str(proteins), str(index), str(shard), str(work / "ckpt"),
                  str(work / "out.h5"), workers=workers)  # fmt: skip
    total = time.perf_counter() - start
    logging.getLogger("virnuc").removeHandler(keep)
    begun = next(i for i, m in enumerate(lines) if m.startswith("resuming:"))
    points = [progress_point(m) for m in lines if m.startswith("progress:")]
    (done, loop, tokens_per_s), (first_done, first_s, _) = points[-1], points[0]
    steady = (done - first_done) / (loop - first_s) if loop > first_s else None
    return {"loop_seconds": loop, "embedded_records": done,
            "first_progress_line": {"records": first_done, "seconds": first_s},
            "steady_records_per_s": steady,
            "job_seconds_including_model_load": total, "records": n, "workers": workers,
            "frames_written_per_s": n / total, "tokens_per_s": tokens_per_s,
            "log": lines[begun - 1 :]}  # fmt: skip


def progress_point(line: str) -> tuple[int, float, float]:
    """(records done, seconds since the loop began, tokens/s) from one progress line."""
    done = int(line.split("/")[0].split()[-1])
    records_per_s = float(line.split(" records/s")[0].rsplit(", ", 1)[-1].replace(",", ""))
    tokens_per_s = float(line.split(" tokens/s")[0].rsplit(", ", 1)[-1].replace(",", ""))
    return done, done / records_per_s, tokens_per_s


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--esm", default="3B")
    p.add_argument("--reads", type=int, default=6000)
    p.add_argument("--token-budget", type=int, default=65536)
    p.add_argument("--compile", action="store_true", help="ESM-2 compiled (the workflow default)")
    p.add_argument("--dnabert-compile", action="store_true", help="DNABERT-S compiled (not)")
    p.add_argument("--workers", type=int, default=4, help="reader processes of the ESM-2 jobs")
    p.add_argument("--duplicates", type=float, default=0.0, help="fraction of reads copied")
    p.add_argument("--dnabert", choices=["full", "tiny"], help="also time DNABERT-S on the frames")
    p.add_argument(
        "--dnabert-workers",
        type=int,
        nargs="+",
        default=[4],
        help="reader processes of the DNABERT-S jobs (one job per value)",
    )
    p.add_argument(
        "--dnabert-backends",
        nargs="+",
        help="DNABERT-S: one bare run and one job per attention backend",
    )
    p.add_argument("--no-esm", action="store_true", help="DNABERT-S only")  # fmt: skip
    p.add_argument("--out")
    return p.parse_args()


def dnabert_backends(a, dna: EmbedSettings, work: Path, index: Path, n: int) -> list[dict]:
    """Per backend: the bare model over two passes and the job, on the same frames."""
    out = []
    for backend in a.dnabert_backends:
        # padded-auto: the padded layout with SDPA choosing its kernel (before round 2)
        attention.PADDED_SDPA = None if backend == "padded-auto" else attention.PADDED_SDPA_DEFAULT
        s = replace(dna, attention_backend="padded" if backend == "padded-auto" else backend)
        try:
            bare = bare_rate(s, work / "frames.fa", index)
            job = e2e_rate(s, work / "frames.fa", index, work / "shard.txt", work, n,
                           a.dnabert_workers[0])  # fmt: skip
            (work / "out.h5").unlink(missing_ok=True)
        except Exception as e:  # noqa: BLE001 - the other backends still count
            out.append({"backend": backend, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            continue
        finally:
            attention.PADDED_SDPA = attention.PADDED_SDPA_DEFAULT
        per_record = bare["tokens"] / n
        jobs = [job]
        if backend == a.dnabert_backends[-1]:  # the last backend again with more readers
            for w in a.dnabert_workers[1:]:
                jobs.append(e2e_rate(s, work / "frames.fa", index, work / "shard.txt", work, n, w))
                (work / "out.h5").unlink(missing_ok=True)
        for j in jobs:
            steady = j["steady_records_per_s"]
            j["steady_tokens_per_s"] = steady * per_record if steady else None
            j.pop("log", None)
        out.append({"backend": backend, "bare": bare, "job": job, "more_readers": jobs[1:]})
        print(f"DNABERT-S {backend}: bare first pass {bare['tokens_per_s']:,.0f} tok/s, second "
              f"{bare['second_pass_tokens_per_s']:,.0f}; job {job['tokens_per_s']:,.0f} tok/s, "
              f"steady {job['steady_tokens_per_s'] or 0:,.0f}; more readers: "
              f"{[(j['workers'], round(j['steady_tokens_per_s'] or 0)) for j in jobs[1:]]}",
              flush=True)  # fmt: skip
    return out


def run_all(a: argparse.Namespace, work: Path) -> dict:
    """Every measurement of one run, on frames made in ``work``."""
    proteins, index, n = prepare(work, a.reads, a.duplicates)
    ckpt = None if a.no_esm else save_esm_checkpoint(a.esm, work, DEVICE)
    settings = EmbedSettings(model="esm", model_spec=str(ckpt), precision="bf16",
                             token_budget=a.token_budget, compile=a.compile,
                             checkpoint_every=5000, progress_seconds=2.0)  # fmt: skip
    dnabert, dnabert_bare = [], None
    if a.dnabert:  # first: each measurement in a process that has not run the 3B model yet
        folder = write_folder(work / "dnabert", FULL_CONFIG if a.dnabert == "full" else TINY_CONFIG)
        # frequent progress lines: the job is short, its steady rate is read between them
        dna = replace(settings, model="dnabert", model_spec=str(folder), progress_seconds=0.5,
                      compile=a.dnabert_compile)  # fmt: skip
        if a.dnabert_backends:
            result = {"bench": "embed_e2e", "machine": mfu.machine_info(), "frames": n,
                      "token_budget": a.token_budget, "dnabert": a.dnabert,
                      "dnabert_compile": a.dnabert_compile, "reader_workers": a.dnabert_workers[0],
                      "dnabert_backends": dnabert_backends(a, dna, work, index, n)}  # fmt: skip
            if a.no_esm:
                return result
        else:
            dnabert_bare = bare_rate(dna, work / "frames.fa", index)
            for w in a.dnabert_workers:
                dnabert.append(
                    e2e_rate(dna, work / "frames.fa", index, work / "shard.txt", work, n, w)
                )
    bare = bare_rate(settings, proteins, index)
    e2e = e2e_rate(settings, proteins, index, work / "shard.txt", work, n, a.workers)
    dedupe = None
    if a.duplicates:
        shard = work / "shard_dedupe.txt"
        dedupe = e2e_rate(settings, proteins, index, shard, work, n, a.workers)
    return {
        "bench": "embed_e2e", "machine": mfu.machine_info(), "esm": a.esm, "frames": n,
        "token_budget": a.token_budget, "compile": a.compile, "bare": bare, "end_to_end": e2e,
        "duplicate_read_fraction": a.duplicates, "end_to_end_dedupe": dedupe,
        "dnabert": a.dnabert, "dnabert_compile": a.dnabert_compile, "bare_dnabert": dnabert_bare,
        "end_to_end_dnabert": dnabert,
    }  # fmt: skip


def compare(r: dict) -> list[str]:
    """Add the ratios to ``r``; the lines that print them."""
    if "bare" not in r:  # DNABERT-S backends only
        return [f"{d['backend']}: {d.get('error') or 'see above'}" for d in r["dnabert_backends"]]
    bare, e2e, dedupe = r["bare"], r["end_to_end"], r["end_to_end_dedupe"]
    r["e2e_over_bare"] = ratio = e2e["tokens_per_s"] / bare["tokens_per_s"]
    idle_ms = 1000 * (bare["tokens"] / e2e["tokens_per_s"] - bare["seconds"]) / bare["batches"]
    r["gpu_idle_ms_per_batch"] = idle_ms
    lines = [f"frames {r['frames']}, batches {bare['batches']}, packing efficiency "
             f"{bare['packing_efficiency']:.3f}",
             f"bare model  {bare['tokens_per_s']:,.0f} tokens/s",
             f"end to end  {e2e['tokens_per_s']:,.0f} tokens/s  ({ratio:.1%} of bare); "
             f"GPU idle {idle_ms:.1f} ms per batch"]  # fmt: skip
    if dedupe:
        off, on = (x["job_seconds_including_model_load"] for x in (e2e, dedupe))
        r["dedupe_speedup_job"] = off / on
        lines.append(f"{r['duplicate_read_fraction']:.0%} duplicate reads: job {off:.1f} s -> "
                     f"{on:.1f} s with dedupe ({off / on:.2f}x)")  # fmt: skip
    if r["bare_dnabert"]:
        d_bare = r["bare_dnabert"]
        per_frame = d_bare["seconds"] / bare["seconds"]  # the same frames, both bare
        r["dnabert_over_esm_bare_time"] = per_frame
        lines.append(f"bare DNABERT-S {d_bare['tokens_per_s']:,.0f} tokens/s: {per_frame:.1%} of "
                     "the bare ESM-2 time on the same frames")  # fmt: skip
    for d in r["end_to_end_dnabert"]:
        d["over_esm_loop_time"] = share = d["loop_seconds"] / e2e["loop_seconds"]
        rates = e2e["steady_records_per_s"], d["steady_records_per_s"]
        steady = rates[0] / rates[1] if all(rates) else None  # None: too few progress lines
        d["over_esm_steady_time_per_frame"] = steady
        shown = "-" if steady is None else f"{steady:.1%}"
        loops = f"{d['loop_seconds']:.1f} s vs ESM-2 {e2e['loop_seconds']:.1f} s"
        lines.append(f"same frames, DNABERT-S with {d['workers']} readers: loop {loops} "
                     f"({share:.1%}); after the first progress line: {shown} of ESM-2's "
                     "time per frame")  # fmt: skip
    return lines


def main() -> int:
    a = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_all(a, Path(tmp))
    print("\n".join(compare(result)))
    mfu.write_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
