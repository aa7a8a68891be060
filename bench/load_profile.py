"""Where an embed job's time before its steady loop goes, step by step, as data.

The steps an ESM-2 embed job runs before its loop reaches its steady rate, through the library's
API with the job's settings, in the order of a job that makes its reference rows before the
loop (``virnuc_core.jobs.embed_job``; where the GPU has room it makes them beside the loop instead,
``virnuc_core.jobs.reference_task``): load the encoder keeping the reference
(``load_encoder(..., keep_reference=True)``), the reference rows of ``--reference`` proteins,
``release_reference`` (packing the fast model), then the first packed batch (the kernels'
compilation and autotuning) and a second, identical batch. Each step
runs under cProfile; the JSON holds its wall seconds and the functions with the most cumulative
time in it.

    python -m bench.load_profile --config /tmp/wf/config.yaml \
        --proteins /tmp/wf/results/gpu/proteins.faa --out load.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import torch
import yaml
from Bio import SeqIO

from virnuc_core.engine.packing import make_batch, pack_ffd
from virnuc_core.registry import load_encoder
from virnuc_core.settings import WorkflowSettings


def profiled(steps: dict, name: str, fn, top: int = 25):
    """Run ``fn()`` under cProfile (CUDA synchronised at the end); record its seconds and its
    ``top`` functions by cumulative time in ``steps[name]``; return what ``fn`` returned."""
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    prof.disable()
    seconds = time.perf_counter() - start
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)[:top]
    steps[name] = {
        "seconds": round(seconds, 3),
        "top_cumulative": [
            {
                "function": f"{Path(f).name}:{line}:{fn_name}",
                "calls": nc,
                "tottime": round(tt, 3),
                "cumtime": round(ct, 3),
            }
            for (f, line, fn_name), (_, nc, tt, ct, _) in rows
        ],  # fmt: skip
    }
    print(f"{name}: {seconds:.2f} s", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, required=True, help="the workflow config of the run")
    ap.add_argument("--proteins", type=Path, required=True, help="the run's proteins.faa")
    ap.add_argument("--reference", type=int, default=200, help="proteins for the reference rows")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    settings = WorkflowSettings.from_config(yaml.safe_load(a.config.read_text())).embed("esm")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seqs = []
    for record in SeqIO.parse(a.proteins, "fasta"):
        seqs.append(str(record.seq))
        if len(seqs) >= max(a.reference, 2000):
            break
    steps: dict = {}
    enc = profiled(steps, "load_encoder",
                   lambda: load_encoder(settings, device, keep_reference=True))  # fmt: skip
    profiled(steps, "reference_rows", lambda: enc.reference_embed(seqs[: a.reference]))
    profiled(steps, "release_reference", enc.release_reference)
    tokens = enc.tokenize(seqs)
    first = next(iter(pack_ffd([len(t) for t in tokens], settings.token_budget)))
    batch = make_batch([tokens[i] for i in first]).to(device)
    profiled(steps, "first_batch", lambda: enc.embed_packed(batch))
    profiled(steps, "second_batch", lambda: enc.embed_packed(batch))
    doc = {
        "command": "python -m bench.load_profile " + " ".join(argv or sys.argv[1:]),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "model": settings.model_spec,
        "batch_tokens": int(batch.input_ids.numel()),
        "steps": steps,
    }  # fmt: skip
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
