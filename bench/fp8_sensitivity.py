"""Where ESM-2's fp8 error comes from: weights vs activations, and layer by layer (CPU or GPU).

A random ESM-2 of a given depth and width (fair-esm's init) embeds chunk-shaped proteins; each
variant runs the fused engine with fp8 rounding (exactly emulated on the CPU: e4m3 values and
scales as on the GPU, the products in fp32) for some of the four matmuls of every layer, or for
only the weights or only the activations, and is compared with fair-esm's fp32 forward by the
cosine of the pooled embeddings.

    python bench/fp8_sensitivity.py --layers 36 --dim 256 --heads 4 --n 12    # ~10 min, 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mfu  # noqa: E402
from esm2_fidelity_gpu import chunk_proteins, cosines  # noqa: E402

from virnuc_core import fused  # noqa: E402
from virnuc_core.fp8 import dequantize  # noqa: E402
from virnuc_core.models.esm2 import LINEARS, ESMEncoder, LinearOps, PackedESM2  # noqa: E402
from virnuc_core.models.esm2_load import random_model  # noqa: E402
from virnuc_core.packing import make_batch, segment_mean  # noqa: E402


class Emulated(LinearOps):
    """fp8 rounding of the weights and/or the activations of the ``names`` matmuls, in fp32."""

    def __init__(self, names, weights: bool, acts: bool, exact: dict):
        super().__init__(fp8=False)
        self.names, self.weights, self.acts, self.exact = set(names), weights, acts, exact

    def linear(self, h, lin, name):
        w = self.exact[id(lin)]
        if name in self.names:
            if self.acts:
                h = dequantize(*fused.quantize_rows_reference(h))
            if self.weights:
                w = dequantize(lin.weight_fp8, lin.weight_scale.reshape(-1, 1))
        return F.linear(h, w, lin.bias)

    def fc1_gelu(self, h, lin):
        return F.gelu(self.linear(h, lin, "fc1"))


VARIANTS = [("all four, weights and activations", LINEARS, True, True),
            ("all four, weights only", LINEARS, True, False),
            ("all four, activations only", LINEARS, False, True)]  # fmt: skip
VARIANTS += [(f"all but {n} (bf16)", tuple(m for m in LINEARS if m != n), True, True)
             for n in LINEARS]  # fmt: skip
VARIANTS += [("fc1 and fc2 only", ("fc1", "fc2"), True, True)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=36)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--n", type=int, default=12, help="proteins")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    fair, alphabet = random_model(0, "cpu", num_layers=a.layers, embed_dim=a.dim,
                                  attention_heads=a.heads)  # fmt: skip
    ref = ESMEncoder(fair, alphabet, spec="random")
    seqs = chunk_proteins(a.n, 0)
    t0 = time.perf_counter()
    want = ref.reference_embed(seqs)
    print(f"fp32 reference: {time.perf_counter() - t0:.1f} s", flush=True)
    model = PackedESM2.from_fair(fair, "cpu", torch.float32, fp8=True)
    pairs = zip(model.layers, ref.model.layers, strict=True)
    exact = {id(getattr(q, n)): getattr(r, n).weight for q, r in pairs for n in LINEARS}
    batch = make_batch(ref.tokenize(seqs))
    rows = []
    for label, names, weights, acts in VARIANTS:
        with torch.inference_mode():
            hidden = model(batch, a.layers, "loop", None, Emulated(names, weights, acts, exact))
            got = segment_mean(hidden, batch.seq_ids, ref.pool_weight(batch), batch.num_seqs)
        c = cosines(got.numpy(), want)
        rows.append({"variant": label, "mean_cos": float(c.mean()), "min_cos": float(c.min())})
        print(f"{label:36s} mean {c.mean():.6f} min {c.min():.6f}", flush=True)
    mfu.write_json(a.out, {"bench": "fp8_sensitivity", "machine": mfu.machine_info(),
                           "architecture": vars(a), "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
