"""End-to-end embed_shard throughput vs the bare model on the same batches (one GPU).

1. Generates reads (``open`` kind: all six frames kept), runs the index stage (chunk + six-frame),
   and writes a random-weight ESM-2 checkpoint (bench/make_models.py's format).
2. Bare model: the shard's proteins tokenized and packed ahead of time, batches already on the
   GPU, ``embed_packed`` timed back to back (CUDA-synchronised): the GPU's own rate.
3. End to end: :func:`virnuc_core.embed_job.run_embed_job` on the same shard: reading by offset in
   DataLoader workers, tokenizing, packing, pinned copies on a side stream, pooling, checkpoint
   commits and the final HDF5 file. Its rate is records over the loop's wall time.

GPU idle per batch = (end-to-end loop time - bare compute time) / batches.

    python bench/embed_e2e.py --esm 3B --reads 6000 --out bench/results/embed_e2e_h100.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mfu  # noqa: E402
from make_models import save_esm_checkpoint  # noqa: E402
from make_reads import make_reads  # noqa: E402

from virnuc_core.embed_job import run_embed_job, sequence_columns  # noqa: E402
from virnuc_core.fasta import FastaRecord, read_index, read_sequences, write_frames  # noqa: E402
from virnuc_core.models import load_encoder  # noqa: E402
from virnuc_core.packing import make_batch, pack_ffd  # noqa: E402
from virnuc_core.settings import EmbedSettings  # noqa: E402
from virnuc_core.shards import write_shard  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a smoke run only


def prepare(work: Path, reads: int) -> tuple[Path, Path, Path, int]:
    """Reads -> frames.fa, proteins.faa, index, and one shard holding every frame."""
    recs = make_reads(reads, 500, 500, kind="open", seed=5, prefix="r")
    records = (FastaRecord(h.split()[0], s, 2 * i + 1) for i, (h, s) in enumerate(recs))
    counts = write_frames(
        records, 500, work / "frames.fa", work / "proteins.faa", work / "index.tsv"
    )
    write_shard(work / "shard.txt", np.arange(counts.frames))
    return work / "proteins.faa", work / "index.tsv", work / "shard.txt", counts.frames


def bare_rate(settings: EmbedSettings, proteins: Path, index: Path) -> dict:
    """The model alone: pre-packed batches already on the GPU, embedded back to back."""
    enc = load_encoder(settings, DEVICE)
    table = read_index(index)
    offsets, lengths = sequence_columns(table, "esm")
    tokens = enc.tokenize(read_sequences(proteins, offsets, lengths))
    groups = pack_ffd([len(t) for t in tokens], settings.token_budget)
    batches = [make_batch([tokens[i] for i in g]).to(DEVICE) for g in groups]
    for b in batches[:2]:
        enc.embed_packed(b)
    mfu._sync()
    start = time.perf_counter()
    for b in batches:
        enc.embed_packed(b)
    mfu._sync()
    seconds = time.perf_counter() - start
    n_tokens = sum(len(t) for t in tokens)
    n_batches = len(batches)
    fill = n_tokens / (n_batches * settings.token_budget)
    del enc, batches
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return {"seconds": seconds, "batches": n_batches, "tokens": n_tokens,
            "tokens_per_s": n_tokens / seconds, "packing_efficiency": fill}  # fmt: skip


def e2e_rate(settings, proteins, index, shard, work: Path, n: int) -> dict:
    """run_embed_job on the whole shard; the loop's time comes from its progress log."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logging.getLogger("virnuc").addHandler(Keep())
    logging.getLogger("virnuc").setLevel(logging.INFO)
    start = time.perf_counter()
    run_embed_job(settings, str(proteins), str(index), str(shard), str(work / "ckpt"),
                  str(work / "out.h5"), workers=4)  # fmt: skip
    total = time.perf_counter() - start
    begun = next(i for i, m in enumerate(lines) if m.startswith("resuming:"))
    final = [m for m in lines if m.startswith("progress:")][-1]
    tokens_per_s = float(final.split(" tokens/s")[0].rsplit(", ", 1)[-1].replace(",", ""))
    return {"job_seconds_including_model_load": total, "records": n,
            "tokens_per_s": tokens_per_s, "log": lines[begun:]}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--esm", default="3B")
    p.add_argument("--reads", type=int, default=6000)
    p.add_argument("--token-budget", type=int, default=65536)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proteins, index, shard, n = prepare(work, a.reads)
        ckpt = save_esm_checkpoint(a.esm, work, DEVICE)
        settings = EmbedSettings(model="esm", model_spec=str(ckpt), precision="bf16",
                                 token_budget=a.token_budget, compile=a.compile,
                                 checkpoint_every=5000, progress_seconds=5.0)  # fmt: skip
        bare = bare_rate(settings, proteins, index)
        e2e = e2e_rate(settings, proteins, index, shard, work, n)
    ratio = e2e["tokens_per_s"] / bare["tokens_per_s"]
    idle_ms = 1000 * (bare["tokens"] / e2e["tokens_per_s"] - bare["seconds"]) / bare["batches"]
    result = {
        "bench": "embed_e2e", "machine": mfu.machine_info(), "esm": a.esm, "frames": n,
        "token_budget": a.token_budget, "compile": a.compile, "bare": bare, "end_to_end": e2e,
        "e2e_over_bare": ratio, "gpu_idle_ms_per_batch": idle_ms,
    }  # fmt: skip
    print(f"frames {n}, batches {bare['batches']}, packing efficiency "
          f"{bare['packing_efficiency']:.3f}")  # fmt: skip
    print(f"bare model  {bare['tokens_per_s']:,.0f} tokens/s")
    print(f"end to end  {e2e['tokens_per_s']:,.0f} tokens/s  ({ratio:.1%} of bare); "
          f"GPU idle {idle_ms:.1f} ms per batch")  # fmt: skip
    mfu.write_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
