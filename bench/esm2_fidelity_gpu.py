"""ESM-2 fidelity on a GPU: the job's packed embeddings vs fair-esm's fp32 forward.

A random ESM-2 of a published architecture (default esm2_t36_3B, fair-esm's default init, seeded,
built directly on the GPU) embeds proteins shaped like 500-base chunks (2/3 of 165-166 aa, 1/3 of
40-166 aa, random amino acids). The reference is the encoder's reference path, fair-esm's own
``ESM2.forward`` in fp32 (TF32 off) on padded 2048-token batches, mean-pooled over residues
1..min(len, 1024): the v1 path. Each run is what an embed job computes (the job's encoder with
its settings, its packer and device loop), compared with the reference by the cosine of every
protein (:func:`virnuc_core.jobs.validate.cosine_rows`).

Default: the job's engine at every precision (bf16, fp16, fp32 on a GPU) and available attention
backend, and the bf16 backends with each other. ``--runs``: named runs
``precision:engine:backend`` instead (engine ``job`` = the job's settings, ``eager``,
``compiled`` or ``fused``; precision ``fp8-ffn`` = fp8 for fc1 and fc2 only), with the fp8 gates
(mean >= 0.999, min >= 0.995 against the fp32 reference); with ``--agreement-n N``, also the
verdicts of a fixed seeded classifier (virnuc_core.engine.models.classify.tiny_classifier over
[DNABERT-S part
| ESM-2 part]; the DNABERT-S part is the same seeded random block for both, so only the ESM-2
features differ) on fp8 vs bf16 (the first bf16 run) features of N further proteins: agreement
as the workflow's validation computes it, with the classifier as seeded (the gate, >= 99.9%)
and with its output bias moved so that half of the bf16 frames are called viral (the decision
boundary through the data: a harsher test); each next to the agreement of two bf16 runs (the
first and the last), the yardstick of how many verdicts rounding noise alone flips.

    python -m bench.esm2_fidelity_gpu --out bench/results/esm2_fidelity.json
    python -m bench.esm2_fidelity_gpu --runs bf16:compiled:varlen fp8:fused:varlen \
        --agreement-n 10000 --out ...                                # round 2 gates
    python -m bench.esm2_fidelity_gpu --model-size 8M --quick      # CPU smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import numpy as np
import torch

from bench import _harness as h
from virnuc_core.engine.models.esm2_load import ESM2_ARCH
from virnuc_core.jobs.validate import cosine_rows

THRESHOLDS = {  # kind of comparison -> (mean cosine >=, min cosine >=)
    "bf16 vs fp32 reference": (0.999, 0.99),
    "fp16 vs fp32 reference": (0.999, 0.99),
    "fp32 vs fp32 reference": (0.99999, 0.9999),
    "bf16 backend vs bf16 backend": (0.999, 0.99),
    "fp8 vs fp32 reference": (0.999, 0.995),
}
AGREEMENT_GATE = 0.999  # fp8 vs bf16 verdicts, balanced classifier
DNABERT_DIM = 768
ENGINES = {
    "job": {},
    "eager": {"compile.esm": False, "fused_kernels": False},
    "compiled": {"compile.esm": True, "fused_kernels": False},
    "fused": {"fused_kernels": True},
    "fused-lt": {"fused_kernels": True, "gelu_in_matmul": True},
    "fused-erf": {"fused_kernels": True, "gelu_in_matmul": False},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--model-size", default="3B", choices=sorted(ESM2_ARCH))
    ap.add_argument("--n", type=int, default=500, help="number of proteins")
    ap.add_argument("--token-budget", type=int, default=32768)
    ap.add_argument("--backends", nargs="*", help="default: every one available here")
    ap.add_argument("--runs", nargs="*", help="precision:engine:backend (engine: "
                    f"{'|'.join(ENGINES)}); default: the precision x backend matrix")  # fmt: skip
    ap.add_argument("--agreement-n", type=int, default=0,
                    help="proteins for fp8 vs bf16 classifier verdicts (0: skip)")  # fmt: skip
    h.add_settings_arg(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="24 proteins (smoke run)")
    ap.add_argument("--out", help="write the results here as JSON")
    return ap.parse_args(argv)


def matrix(backends: list[str] | None) -> list[str]:
    """The job's engine at every precision and the backends each takes."""
    if not h.CUDA:
        return [f"fp32:job:{b}" for b in backends or ["loop", "padded"]]
    backends = backends or ["triton", "varlen", "flex", "padded", "loop"] + (
        ["flash"] if importlib.util.find_spec("flash_attn") else [])  # fmt: skip
    skip = {"fp32": ("varlen", "flash", "triton"), "fp16": ("triton", "flex", "loop", "flash")}
    return [f"{p}:job:{b}" for p in ("bf16", "fp16", "fp32") for b in backends
            if b not in skip.get(p, ())]  # fmt: skip


class Runs:
    """The shared fp32 fair-esm model; encoders for run specs, with the job's settings."""

    def __init__(self, a: argparse.Namespace):
        self.a = a
        t0 = time.perf_counter()
        self.fair, self.alphabet = h.random_esm(a.model_size, a.seed)
        print(f"{ESM2_ARCH[a.model_size][0]}: random weights on {h.DEVICE} in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip

    def encoder(self, spec: str):
        """The encoder of ``precision:engine:backend`` (missing parts: the job's)."""
        precision, engine, backend = (spec.split(":") + ["", ""])[:3]
        changes = {**dict(self.a.set), **ENGINES[engine or "job"],
                   "token_budget.esm": self.a.token_budget}  # fmt: skip
        options = {}
        if precision == "fp8-ffn":
            precision, options["fp8_layers"] = "fp8", ("fc1", "fc2")
        changes["precision"] = precision
        if backend:
            changes["attention_backend"] = backend
        settings = h.job_settings("esm", ESM2_ARCH[self.a.model_size][0], changes)
        fair = self.fair
        return h.esm_encoder(fair, self.alphabet, settings, reference=lambda: fair, **options)

    def embed(self, spec: str, seqs: list[str]) -> tuple[np.ndarray, float, dict]:
        """What the job computes for ``seqs`` with run ``spec``: (embeddings, seconds, describe)."""
        enc = self.encoder(spec)
        batches = h.job_batches(enc.tokenize(seqs), self.a.token_budget)
        h.run_batches(enc.embed_packed, batches[:1])  # warm-up / compile
        timed = h.run_batches(enc.embed_packed, batches, keep=True)
        return timed.embeddings, timed.seconds, enc.describe()


def compare(kind: str, label: str, got: np.ndarray, want: np.ndarray, seconds: float) -> dict:
    """One table row: cosines of ``got`` vs ``want`` and whether they meet ``THRESHOLDS[kind]``."""
    c = cosine_rows(got, want)
    mean_min, min_min = THRESHOLDS[kind]
    ok = bool(np.all(np.isfinite(c)) and c.mean() >= mean_min and c.min() >= min_min)
    return {"comparison": kind, "run": label, "mean_cos": float(c.mean()),
            "min_cos": float(c.min()), "p01_cos": float(np.quantile(c, 0.01)),
            "seconds": round(seconds, 3), "pass": ok}  # fmt: skip


def against_reference(runs: Runs, specs: list[str], seqs, reference) -> tuple[list, dict]:
    """Every run vs the fp32 reference; (rows, embeddings by spec)."""
    rows, embs = [], {}
    for spec in specs:
        kind = f"{'fp8' if spec.startswith('fp8') else spec.split(':')[0]} vs fp32 reference"
        try:
            got, seconds, d = runs.embed(spec, seqs)
        except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
            rows.append({"comparison": kind, "run": spec, "pass": False,
                         "error": f"{type(e).__name__}: {str(e)[:300]}"})  # fmt: skip
            print(f"{spec}: FAILED {rows[-1]['error']}")
            continue
        embs[spec] = got
        rows.append({**compare(kind, spec, got, reference, seconds), "precision_used":
                     d["precision"], "backend_used": d["attention_backend"]})  # fmt: skip
    bf16 = [s for s in embs if s.startswith("bf16")]
    if not runs.a.runs:  # the matrix: bf16 backends against the first
        rows += [compare("bf16 backend vs bf16 backend", f"{s} vs {bf16[0]}", embs[s],
                         embs[bf16[0]], 0.0) for s in bf16[1:]]  # fmt: skip
    return rows, embs


def agreement(runs: Runs, n: int, seed: int, fasts: list, base: str, yard: str) -> dict:
    """Verdicts of a fixed seeded classifier on each of ``fasts`` vs ``base`` features of n
    proteins; and, as the yardstick of how many verdicts that classifier flips for rounding
    noise alone, on ``yard`` (another bf16 run) vs ``base``."""
    from virnuc_core.engine.models.classify import predict_scores, tiny_classifier

    seqs = h.chunk_proteins(n, seed + 1)
    feats = {spec: runs.embed(spec, seqs)[0] for spec in dict.fromkeys((base, yard, *fasts))}
    dna = np.random.default_rng(seed + 2).standard_normal((n, DNABERT_DIM)).astype(np.float32)
    clf = tiny_classifier(DNABERT_DIM + feats[base].shape[1], hidden=512, seed=seed)
    out = {"n": n, "fast": fasts, "base": base, "yardstick": yard, "gate": AGREEMENT_GATE}
    for label in ("as seeded", "balanced"):
        if label == "balanced":  # move the boundary to the median bf16 margin: half viral
            s = predict_scores(clf, np.hstack([dna, feats[base]]))
            margin = np.log(s[:, 1] + 1e-30) - np.log(s[:, 0] + 1e-30)
            with torch.no_grad():
                clf.output_layer.bias[1] -= float(np.median(margin))
        verdicts = {k: predict_scores(clf, np.hstack([dna, v])).argmax(1) for k, v in feats.items()}
        out[label] = {
            "agreement": {f: float(np.mean(verdicts[f] == verdicts[base])) for f in fasts},
            "yardstick_agreement": float(np.mean(verdicts[yard] == verdicts[base])),
            "viral_fraction_base": float(np.mean(verdicts[base] == 1)),
        }
    out["pass"] = {f: a >= AGREEMENT_GATE for f, a in out["as seeded"]["agreement"].items()}
    print(f"classifier verdicts vs {base}, {n} proteins: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Compare every run with the fp32 reference; 1 if a threshold fails."""
    a = parse_args(argv)
    n = 24 if a.quick else a.n
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    name, arch = ESM2_ARCH[a.model_size]
    seqs = h.chunk_proteins(n, a.seed)
    runs = Runs(a)
    t0 = time.perf_counter()
    reference = runs.encoder("fp32").reference_embed(seqs)
    ref_seconds = time.perf_counter() - t0
    print(f"fp32 reference (fair-esm forward): {n} proteins in {ref_seconds:.1f} s")
    rows, _ = against_reference(runs, a.runs or matrix(a.backends), seqs, reference)
    h.print_table(rows, ["comparison", "run", "mean_cos", "min_cos", "p01_cos", "seconds", "pass"])
    lengths = [len(s) for s in seqs]
    payload = {
        "bench": "esm2_fidelity_gpu", "machine": h.machine_info(), "model": name,
        "architecture": arch, "weights": f"random, fair-esm default init, seed {a.seed}",
        "n_proteins": n, "protein_lengths": {"min": min(lengths), "max": max(lengths),
                                             "mean": float(np.mean(lengths))},
        "reference": "fair-esm ESM2.forward, fp32, TF32 off, 2048-token padded batches, "
        "mean over residues 1..min(len,1024) of the last layer",
        "reference_seconds": ref_seconds, "token_budget": a.token_budget,
        "thresholds": {k: {"mean_cos": v[0], "min_cos": v[1]} for k, v in THRESHOLDS.items()},
        "rows": rows, "pass": all(r["pass"] for r in rows),
    }  # fmt: skip
    fp8_runs = [r for r in (a.runs or []) if r.startswith("fp8")]
    if a.agreement_n and fp8_runs:
        bf16 = [r for r in a.runs if not r.startswith("fp8")] or ["bf16"]
        payload["classifier_agreement"] = got = agreement(runs, a.agreement_n, a.seed,
                                                          fp8_runs, bf16[0], bf16[-1])  # fmt: skip
        payload["pass"] = payload["pass"] and all(got["pass"].values())
    h.write_json(a.out, payload)
    failed = [r["run"] for r in rows if not r["pass"]]
    print("FAILED thresholds: " + ", ".join(failed) if failed else "all thresholds met")
    return 0 if payload["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
