"""One ESM-2 layer over one packed batch: how close each way of running it gets to the matmuls.

A single ``PackedLayer`` with the ESM-2 3B shape (dim 2560, 40 heads, FFN 10240), random
weights, bf16, over one packed batch of the protein set of bench/esm2_throughput.py at the
given token budget. Each variant's median time per layer call gives an implied MFU (model FLOPs
of one layer over the measured bf16 8192^3 matmul rate) and tokens/s for the whole 36-layer
model (embedding and pooling ignored: they are < 1% of a batch). Each variant runs on the fullest
batch at the budget and on one at 3/4 of it: a compiled variant that compiles again for the
second token count says so. Variants:

  gemms        the four linear projections alone (qkv, out, fc1, fc2): the ceiling
  attention    varlen attention alone
  eager        the layer as ours runs it uncompiled
  compiled     pre/post-attention compiled as ours does (dynamic=True, default mode)
  marked       the same with only the token dimension dynamic (torch._dynamo.mark_dynamic)
  static       the same compiled with dynamic=False (one graph per token count)
  autotune     dynamic=False, mode max-autotune-no-cudagraphs (Inductor picks matmul kernels)
  marked-autotune  marked, mode max-autotune-no-cudagraphs
  layer-graph  the whole layer, attention included, in one torch.compile graph
  gelu-epilogue  eager, fc1 + bias + GELU in one cuBLASLt call (its GELU is the tanh form)

    python bench/esm2_layer_micro.py --out bench/results/esm2_layer_micro_h100.json  # ~3 min
    python bench/esm2_layer_micro.py --quick                                         # CPU smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mfu  # noqa: E402
from esm2_fidelity_gpu import chunk_proteins  # noqa: E402

from virnuc_core.attention import choose_backend, varlen_attention  # noqa: E402
from virnuc_core.models import esm2  # noqa: E402
from virnuc_core.packing import make_batch, pack_ffd  # noqa: E402

VARIANTS = ("gemms", "attention", "eager", "compiled", "marked", "static", "autotune",
            "marked-autotune", "layer-graph", "gelu-epilogue")  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--token-budget", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=2560)
    ap.add_argument("--heads", type=int, default=40)
    ap.add_argument("--layers", type=int, default=36, help="for the whole-model estimate")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="tiny shapes on the CPU")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.quick:
        args.token_budget, args.dim, args.heads, args.iters = 2048, 64, 4, 2
        args.variants = [v for v in args.variants if v in ("gemms", "attention", "eager")]
    return args


def one_batch(budget: int, device):
    """The fullest FFD group of the protein set at ``budget``, on ``device``."""
    seqs = chunk_proteins(4 * budget // 140, 0)
    lengths = [len(s) + 2 for s in seqs]
    group = max(pack_ffd(lengths, budget), key=lambda g: sum(lengths[i] for i in g))
    tokens = [torch.full((lengths[i],), 5).numpy() for i in group]
    return make_batch(tokens).to(device), [lengths[i] for i in group]


def layer_flops(dim: int, lengths: list[int]) -> float:
    """Model FLOPs of one layer: 2 x weights x tokens + 4 x L^2 x dim per sequence."""
    weights = 3 * dim * dim + dim * dim + 2 * dim * 4 * dim
    return 2.0 * weights * sum(lengths) + sum(4.0 * n * n * dim for n in lengths)


class Case:
    """One packed batch's layer inputs: hidden states, rotary tables, the batch."""

    def __init__(self, budget, dim, dtype, device, rotary):
        self.batch, self.lengths = one_batch(budget, device)
        self.x = torch.randn(sum(self.lengths), dim, device=device, dtype=dtype)
        self.cos, self.sin = rotary(self.batch.positions, dtype)


def mark_tokens_dynamic(*tensors):
    """Views of ``tensors`` whose token dimension (only) is marked dynamic for torch.compile."""
    views = tuple(t.view(t.shape) for t in tensors)  # the mark stays on the view, not the case
    for t in views:
        torch._dynamo.mark_dynamic(t, 0)
    return views


def variants(layer, backend):
    """name -> a callable running that variant once on a :class:`Case`."""
    ln1, ln2, heads, eps = layer.attn_ln, layer.ffn_ln, layer.heads, layer.eps
    qkv_w = (ln1.weight, ln1.bias, layer.qkv.weight, layer.qkv.bias)
    mlp = (layer.out.weight, layer.out.bias, ln2.weight, ln2.bias, layer.fc1.weight,
           layer.fc1.bias, layer.fc2.weight, layer.fc2.bias)  # fmt: skip

    def gemms(c):
        layer.qkv(c.x)
        layer.out(c.x)
        layer.fc2(layer.fc1(c.x))

    def attention(c):
        if not hasattr(c, "qkv"):  # q, k, v made once per case: attention alone is timed
            c.qkv = esm2.pre_attention(c.x, c.cos, c.sin, *qkv_w, heads, eps)
        return varlen_attention(*c.qkv, c.batch, backend, scale=1.0)

    def pair(pre, post, marked=False):
        def run(c):
            x, cos, sin = mark_tokens_dynamic(c.x, c.cos, c.sin) if marked else (c.x, c.cos, c.sin)
            q, k, v = pre(x, cos, sin, *qkv_w, heads, eps)
            a = varlen_attention(q, k, v, c.batch, backend, scale=1.0)
            a = mark_tokens_dynamic(a)[0] if marked else a
            return post(x, a, *mlp, eps)

        return run

    def compiled_pair(marked=False, **kw):
        pre = torch.compile(esm2.pre_attention, **kw)
        return pair(pre, torch.compile(esm2.post_attention, **kw), marked)

    def gelu_epilogue(c):
        q, k, v = esm2.pre_attention(c.x, c.cos, c.sin, *qkv_w, heads, eps)
        a = varlen_attention(q, k, v, c.batch, backend, scale=1.0)
        y = c.x + torch.nn.functional.linear(a.flatten(1), layer.out.weight, layer.out.bias)
        h = torch.nn.functional.layer_norm(y, (y.shape[-1],), ln2.weight, ln2.bias, eps)
        g = torch._addmm_activation(layer.fc1.bias, h, layer.fc1.weight.t(), use_gelu=True)
        return y + layer.fc2(g)

    graph = torch.compile(lambda c: layer(c.x, c.cos, c.sin, c.batch, backend), dynamic=False)
    return {
        "gemms": gemms,
        "attention": attention,
        "eager": lambda c: layer(c.x, c.cos, c.sin, c.batch, backend),
        "compiled": compiled_pair(dynamic=True),
        "marked": compiled_pair(marked=True, dynamic=None),
        "static": compiled_pair(dynamic=False),
        "autotune": compiled_pair(dynamic=False, mode="max-autotune-no-cudagraphs"),
        "marked-autotune": compiled_pair(marked=True, mode="max-autotune-no-cudagraphs"),
        "layer-graph": graph,
        "gelu-epilogue": gelu_epilogue,
    }


def frames_compiled() -> int:
    from torch._dynamo.utils import counters

    return counters["frames"]["ok"]


def measure(name, fn, cases, peak, args) -> dict:
    """First call (compile) on the full batch, one call on the second batch (a new token count:
    does it compile again?), then the median of ``iters`` calls on each."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    full, other = cases
    t0 = time.perf_counter()
    fn(full)
    sync()
    row = {"variant": name, "first_call_s": time.perf_counter() - t0}
    before = frames_compiled()
    t0 = time.perf_counter()
    fn(other)
    sync()
    row["second_shape_first_call_s"] = time.perf_counter() - t0
    row["frames_compiled_on_second_shape"] = frames_compiled() - before
    for key, c in (("", full), ("second_shape_", other)):
        sec = mfu.time_cuda(lambda c=c: fn(c), warmup=2, iters=args.iters)
        row[key + "ms_per_layer"] = 1e3 * sec
        if name not in ("gemms", "attention"):
            row[key + "mfu"] = layer_flops(args.dim, c.lengths) / sec / 1e12 / peak
            row[key + "model_tokens_per_s_est"] = sum(c.lengths) / (sec * args.layers)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = False
    peak = mfu.measure_matmul_tflops(torch.bfloat16)
    torch.manual_seed(0)
    layer = esm2.PackedLayer(args.dim, args.heads, 4 * args.dim).to(device, dtype).eval()
    rotary = esm2.PackedESM2(1, args.dim, args.heads, _Alphabet()).to(device).rotary
    budgets = (args.token_budget, args.token_budget * 3 // 4)
    cases = [Case(b, args.dim, dtype, device, rotary) for b in budgets]
    backend = choose_backend("auto", device.type, False)
    rows = []
    with torch.inference_mode():
        fns = variants(layer, backend)
        for name in args.variants:
            try:
                rows.append(measure(name, fns[name], cases, peak, args))
            except Exception as e:  # noqa: BLE001 - one failed variant must not lose the rest
                rows.append({"variant": name, "notes": f"failed: {type(e).__name__}: {e}"[:300]})
            print(rows[-1], flush=True)
    payload = {"bench": "esm2_layer_micro", "machine": mfu.machine_info(),
               "bf16_matmul_tflops": peak, "backend": backend,
               "tokens": [sum(c.lengths) for c in cases],
               "sequences": [len(c.lengths) for c in cases],
               "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "rows": rows}  # fmt: skip
    mfu.write_json(args.out, payload)
    return 0


class _Alphabet:
    """The two alphabet fields PackedESM2 reads (rotary tables only are used here)."""

    mask_idx = 32

    def __len__(self) -> int:
        return 33


if __name__ == "__main__":
    sys.exit(main())
