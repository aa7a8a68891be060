"""ESM-2 fidelity on a GPU: packed reduced-precision embeddings vs fair-esm's fp32 forward.

A random ESM-2 of a published architecture (default esm2_t36_3B, fair-esm's default init, seeded,
built directly on the GPU) embeds proteins shaped like 500-base chunks (2/3 of 165-166 aa, 1/3 of
40-166 aa, random amino acids). The reference is fair-esm's own ``ESM2.forward`` in fp32 (TF32
off) on padded 2048-token batches, mean-pooled over residues 1..min(len, 1024): the v1 path.
Every available attention backend of the packed engine is compared with it (cosine per protein,
in float64), in bf16 and fp32, and the backends with each other.

Round 2 (``--runs``): named engine runs instead of the precision x backend matrix (e.g.
``bf16:compiled:varlen fp8:fused:triton``), the fp8 gates (mean >= 0.999, min >= 0.995 against
the fp32 reference), and with ``--agreement-n N`` the verdicts of a fixed seeded classifier
(virnuc_core.classify.tiny_classifier over [DNABERT-S part | ESM-2 part]; the DNABERT-S part is
the same seeded random block for both, so only the ESM-2 features differ) on fp8 vs bf16
(the first bf16 run, today's default) features of N further proteins: agreement as the
workflow's validation computes it, with the classifier as seeded (the gate, >= 99.9%) and with
its output bias moved so that half of the bf16 frames are called viral (the decision boundary
through the data: a harsher test); each next to the agreement of two bf16 engines (the first
and the last bf16 run), the yardstick of how many verdicts rounding noise alone flips.

    python bench/esm2_fidelity_gpu.py --out bench/results/esm2_fidelity.json
    python bench/esm2_fidelity_gpu.py --runs bf16:compiled:varlen fp8:fused:varlen \
        --agreement-n 10000 --out ...                                # round 2 gates
    python bench/esm2_fidelity_gpu.py --model-size 8M --quick      # CPU smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mfu  # noqa: E402

from virnuc_core.attention import choose_backend  # noqa: E402
from virnuc_core.models.esm2 import ESMEncoder  # noqa: E402
from virnuc_core.models.esm2_load import ESM2_ARCH, random_model  # noqa: E402

AMINO = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
THRESHOLDS = {  # kind of comparison -> (mean cosine >=, min cosine >=)
    "bf16 vs fp32 reference": (0.999, 0.99),
    "fp16 vs fp32 reference": (0.999, 0.99),
    "fp32 vs fp32 reference": (0.99999, 0.9999),
    "bf16 backend vs bf16 backend": (0.999, 0.99),
    "fp8 vs fp32 reference": (0.999, 0.995),
}
AGREEMENT_GATE = 0.999  # fp8 vs bf16 verdicts, balanced classifier
DNABERT_DIM = 768


def chunk_proteins(n: int, seed: int = 0) -> list[str]:
    """Proteins shaped like translated 500-base chunks: 2/3 of 165-166 aa, 1/3 of 40-166 aa."""
    rng = np.random.default_rng(seed)
    full = rng.random(n) < 2 / 3
    lengths = np.where(full, rng.integers(165, 167, n), rng.integers(40, 167, n))
    return ["".join(rng.choice(AMINO, size=int(k))) for k in lengths]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def available_backends(device: torch.device) -> list[str]:
    if device.type != "cuda":
        return ["loop", "padded"]
    names = ["varlen", "flex", "padded", "loop"]
    if importlib.util.find_spec("flash_attn") is not None:
        names.insert(0, "flash")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model-size", default="3B", choices=sorted(ESM2_ARCH))
    ap.add_argument("--n", type=int, default=500, help="number of proteins")
    ap.add_argument("--token-budget", type=int, default=32768)
    ap.add_argument("--backends", nargs="*", help="default: every one available here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--runs",
        nargs="*",
        help="round 2: precision:engine:backend, engine "
        "default|compiled|fused (default: the precision x backend matrix)",
    )
    ap.add_argument(
        "--agreement-n",
        type=int,
        default=0,
        help="proteins for fp8 vs bf16 classifier verdicts (0: skip)",
    )
    ap.add_argument("--quick", action="store_true", help="24 proteins (smoke run)")
    ap.add_argument("--out", help="write the results here as JSON")
    return ap.parse_args(argv)


def random_encoders(
    name: str, arch: dict, seed: int, device: torch.device
) -> Callable[[str, str], ESMEncoder]:
    """Build the random fair-esm model once; return a maker of packed encoders on it."""
    t0 = time.perf_counter()
    fair, alphabet = random_model(seed, device, **arch)
    print(f"{name} architecture, random weights, on {device} in {time.perf_counter() - t0:.1f} s")

    def encoder(precision: str, backend: str, **engine) -> ESMEncoder:
        return ESMEncoder(
            fair,
            alphabet,
            spec=f"random:{name}",
            device=device,
            precision=precision,
            backend=backend,
            **engine,
        )

    return encoder


ENGINES = {"default": {}, "compiled": {"compile": True}, "fused": {"fused": True}}


def parse_run(spec: str) -> tuple[str, str, dict]:
    """``precision:engine:backend`` -> (precision, backend, encoder options); precision
    ``fp8-ffn`` is fp8 for fc1 and fc2 only."""
    precision, engine, backend = (spec.split(":") + ["default", "varlen"])[:3]
    options = dict(ENGINES[engine])
    if precision == "fp8-ffn":
        precision, options["fp8_layers"] = "fp8", ("fc1", "fc2")
    return precision, backend, options


def named_runs(encoder, reference, seqs, runs: list[str], budget: int) -> tuple[list, dict]:
    """Round 2: each ``precision:engine:backend`` run vs the fp32 reference."""
    rows, embs = [], {}
    for spec in runs:
        precision, backend, options = parse_run(spec)
        try:
            enc = encoder(precision, backend, **options)
            got, seconds = timed_embed(enc, backend, seqs, budget)
        except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
            error = f"{type(e).__name__}: {str(e)[:300]}"
            rows.append({"comparison": f"{precision} vs fp32 reference", "run": spec,
                         "pass": False, "error": error})  # fmt: skip
            print(f"{spec}: FAILED {rows[-1]['error']}")
            continue
        embs[spec] = got
        kind = f"{'fp8' if precision == 'fp8' else precision} vs fp32 reference"
        rows.append(
            {**compare(kind, spec, got, reference, seconds), "precision_used": enc.precision}
        )
        del enc
    return rows, embs


def agreement(encoder, n: int, seed: int, budget: int, fasts: list, base: str, yard: str) -> dict:
    """Verdicts of a fixed seeded classifier on each of ``fasts`` vs ``base`` features of n
    proteins; and, as the yardstick of how many verdicts that classifier flips for rounding
    noise alone, on ``yard`` (another bf16 engine) vs ``base``."""
    from virnuc_core.classify import predict_scores, tiny_classifier

    seqs = chunk_proteins(n, seed + 1)
    feats = {}
    for spec in dict.fromkeys((base, yard, *fasts)):
        precision, backend, options = parse_run(spec)
        enc = encoder(precision, backend, **options)
        feats[spec] = timed_embed(enc, backend, seqs, budget)[0]
        del enc
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


def compare(kind: str, label: str, got: np.ndarray, want: np.ndarray, seconds: float) -> dict:
    """One table row: cosines of ``got`` vs ``want`` and whether they meet ``THRESHOLDS[kind]``."""
    c = cosines(got, want)
    mean_min, min_min = THRESHOLDS[kind]
    ok = bool(np.all(np.isfinite(c)) and c.mean() >= mean_min and c.min() >= min_min)
    return {
        "comparison": kind,
        "run": label,
        "mean_cos": float(c.mean()),
        "min_cos": float(c.min()),
        "p01_cos": float(np.quantile(c, 0.01)),
        "seconds": round(seconds, 3),
        "pass": ok,
    }


def sync(device: torch.device) -> None:
    """Wait for the GPU, so that wall-clock times cover its work."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_embed(
    enc: ESMEncoder, backend: str, seqs: list[str], budget: int
) -> tuple[np.ndarray, float]:
    """Embed ``seqs`` with ``enc`` switched to ``backend``, after a warm-up; (embeddings, s)."""
    device = enc.device
    enc.backend = choose_backend(backend, device.type, False)
    enc.embed(seqs[: min(len(seqs), 64)], budget)  # warm-up / compile
    sync(device)
    t0 = time.perf_counter()
    got = enc.embed(seqs, budget)
    sync(device)
    return got, time.perf_counter() - t0


def runs_at(precision: str, backends: list[str]) -> list[str]:
    """The backends compared at ``precision``."""
    if precision == "fp32":
        # flash kernels take fp16/bf16 only
        return [b for b in backends if b not in ("varlen", "flash")]
    if precision == "fp16":
        return [b for b in backends if b in ("varlen", "padded")]
    return list(backends)


def against_reference(
    encoder: Callable[[str, str], ESMEncoder],
    ref_enc: ESMEncoder,
    reference: np.ndarray,
    seqs: list[str],
    backends: list[str],
    budget: int,
) -> tuple[list[dict], dict]:
    """Every precision x backend vs the fp32 reference; (rows, embeddings by (precision, b))."""
    rows, embs = [], {}
    precisions = ["bf16", "fp16", "fp32"] if ref_enc.device.type == "cuda" else ["fp32"]
    for precision in precisions:
        enc = encoder(precision, backends[0]) if precision != "fp32" else ref_enc
        for b in runs_at(precision, backends):
            got, seconds = timed_embed(enc, b, seqs, budget)
            embs[(precision, b)] = got
            kind = f"{precision} vs fp32 reference"
            rows.append(compare(kind, f"{precision} {b}", got, reference, seconds))
        del enc
    return rows, embs


def backend_vs_backend(embs: dict, backends: list[str]) -> list[dict]:
    """The packed backends against the first one in bf16 ('loop': the CPU-fallback semantics)."""
    bf16 = [b for b in backends if ("bf16", b) in embs]
    return [
        compare(
            "bf16 backend vs bf16 backend", f"{a} vs {b}", embs[("bf16", a)], embs[("bf16", b)], 0.0
        )
        for a, b in zip(bf16[:1] * len(bf16), bf16[1:], strict=False)
    ]


def build_payload(
    args: argparse.Namespace,
    name: str,
    arch: dict,
    seqs: list[str],
    ref_seconds: float,
    rows: list[dict],
) -> dict:
    """The JSON written by ``--out``."""
    lengths = [len(s) for s in seqs]
    return {
        "bench": "esm2_fidelity_gpu",
        "machine": mfu.machine_info(),
        "model": name,
        "architecture": arch,
        "weights": f"random, fair-esm default init, seed {args.seed}",
        "n_proteins": len(seqs),
        "protein_lengths": {
            "min": min(lengths),
            "max": max(lengths),
            "mean": float(np.mean(lengths)),
        },
        "reference": "fair-esm ESM2.forward, fp32, TF32 off, 2048-token padded batches, "
        "mean over residues 1..min(len,1024) of the last layer",
        "reference_seconds": ref_seconds,
        "token_budget": args.token_budget,
        "thresholds": {k: {"mean_cos": v[0], "min_cos": v[1]} for k, v in THRESHOLDS.items()},
        "rows": rows,
        "pass": all(r["pass"] for r in rows),
    }


def verdict(rows: list[dict]) -> int:
    """Print which runs failed their thresholds; the exit status."""
    failed = [r["run"] for r in rows if not r["pass"]]
    if failed:
        print("FAILED thresholds:", ", ".join(failed))
        return 1
    print("all thresholds met")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Compare every backend and precision with the fp32 reference; 1 if a threshold fails."""
    args = parse_args(argv)
    n = 24 if args.quick else args.n
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    name, arch = ESM2_ARCH[args.model_size]
    seqs = chunk_proteins(n, args.seed)
    encoder = random_encoders(name, arch, args.seed, device)
    t0 = time.perf_counter()
    ref_enc = encoder("fp32", "padded")
    reference = ref_enc.reference_embed(seqs)
    ref_seconds = time.perf_counter() - t0
    print(f"fp32 reference (fair-esm forward): {n} proteins in {ref_seconds:.1f} s")
    backends = args.backends or available_backends(device)
    if args.runs:
        rows, _ = named_runs(encoder, reference, seqs, args.runs, args.token_budget)
    else:
        rows, embs = against_reference(
            encoder, ref_enc, reference, seqs, backends, args.token_budget
        )
        rows += backend_vs_backend(embs, backends)
    del ref_enc
    mfu.print_table(
        rows, ["comparison", "run", "mean_cos", "min_cos", "p01_cos", "seconds", "pass"]
    )
    payload = build_payload(args, name, arch, seqs, ref_seconds, rows)
    fp8_runs = [r for r in (args.runs or []) if r.startswith("fp8")]
    if args.agreement_n and fp8_runs:
        bf16 = [r for r in args.runs if not r.startswith("fp8")] or ["bf16:compiled:varlen"]
        payload["classifier_agreement"] = agreement(
            encoder, args.agreement_n, args.seed, args.token_budget, fp8_runs, bf16[0], bf16[-1]
        )
        passes = payload["classifier_agreement"]["pass"]
        payload["pass"] = payload["pass"] and all(passes.values())
        rows = rows + [{"run": "classifier agreement", "pass": payload["pass"]}]
    mfu.write_json(args.out, payload)
    return verdict(rows)


if __name__ == "__main__":
    sys.exit(main())
