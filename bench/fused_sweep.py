"""Launch settings of the fused engine's memory-bound kernels, swept at ESM-2 3B sizes (GPU).

A tuning experiment, not a speed claim: it launches the Triton kernels of
:mod:`virnuc_core.engine.fused` directly with each (block, warps) setting and times them, so that
the library's fixed settings can be chosen from measurements; bench/esm2_levers.py then measures
the engine through the public API. Also times the residual-adding matmul (``x.addmm_``)
against ``F.linear`` for out and fc2 in alternating rounds, to see the spread between rounds.

    python -m bench.fused_sweep --out bench/results/2026-12-03-round3-h200/fused_sweep_h200.json
    python -m bench.fused_sweep --quick        # CPU crash check (nothing is timed usefully)
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from bench import _harness as h
from virnuc_core.engine import fused

DEV = h.DEVICE
ROWS: list[dict] = []


def timed(fn, iters: int = 20) -> float:
    return h.time_cuda(fn, warmup=3, iters=iters)


def record(kernel: str, setting: dict, seconds: float, gbytes: float | None = None, **extra):
    row = {"kernel": kernel, **setting, "ms": 1000 * seconds, **extra}
    if gbytes:
        row["TB/s"] = gbytes / seconds / 1000
    ROWS.append(row)
    rate = f"{row['TB/s']:.2f} TB/s" if "TB/s" in row else ""
    print(f"{kernel:<34} {setting}  {row['ms']:.3f} ms  {rate}", flush=True)


def sweep_layer_norm(t: int, d: int) -> None:
    """One row a program: warps per row (fewer warps, more rows in flight per SM)."""
    g = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(t, d, device=DEV, generator=g).bfloat16()
    y = torch.randn(t, d, device=DEV, generator=g).bfloat16()
    w, b = torch.rand(d, device=DEV) + 0.5, 0.1 * torch.randn(d, device=DEV)
    shift = 0.1 * torch.randn(d, device=DEV, generator=g)
    h_out = torch.empty_like(x)
    block = fused._block(d)
    for has_y in (True, False):
        for warps in (1, 2, 4, 8, 16):

            def run(has_y=has_y, warps=warps):
                fused._add_ln_kernel[(t,)](
                    x, y, w, b, shift, h_out, x, d, x.stride(0), y.stride(0), 1e-5,
                    HAS_Y=has_y, HAS_SHIFT=not has_y, FP8=False, BLOCK=block, num_warps=warps,
                )  # fmt: skip

            passes = 4 if has_y else 2
            name = "add_layer_norm (x += y)" if has_y else "layer_norm + shift (no y)"
            record(name, {"warps": warps}, timed(run), t * d * 2 * passes / 1e9)


def sweep_gelu(t: int, f: int) -> None:
    u = torch.randn(t, f, device=DEV).bfloat16()
    n = u.numel()
    for block in (1024, 2048, 4096, 8192, 16384):
        for warps in (4, 8, 16):

            def run(block=block, warps=warps):
                grid = (triton.cdiv(n, block),)
                fused._gelu_kernel[grid](u, n, BLOCK=block, num_warps=warps)

            record("gelu (in place)", {"block": block, "warps": warps}, timed(run), n * 4 / 1e9)


def sweep_rotary(t: int, d: int, heads: int) -> None:
    qkv = torch.randn(t, 3 * d, device=DEV).bfloat16()
    inv = 1.0 / (10000 ** (torch.arange(0, d // heads, 2, device=DEV).float() / (d // heads)))
    cos, sin = fused.rotary_tables(torch.arange(t, device=DEV) % 170, inv)
    rows, half = t * 2 * heads, d // heads // 2
    for block_r in (16, 32, 64, 128, 256):
        for warps in (2, 4, 8):

            def run(block_r=block_r, warps=warps):
                fused._rotary_kernel[(triton.cdiv(rows, block_r),)](
                    qkv, cos, sin, rows, qkv.stride(0),
                    CHUNKS=2 * heads, HALF=half, BLOCK_R=block_r, num_warps=warps,
                )  # fmt: skip

            gb = t * 2 * d * 2 * 2 / 1e9
            record("rotary_qkv (in place)", {"block_r": block_r, "warps": warps}, timed(run), gb)


def alternate_matmuls(t: int, d: int, f: int, rounds: int) -> None:
    """F.linear (bias in the epilogue, new output) vs x.addmm_ (beta = 1, into x), in turns."""
    g = torch.Generator(device=DEV).manual_seed(1)
    for name, (n, k) in {"out": (d, d), "fc2": (d, f)}.items():
        a = torch.randn(t, k, device=DEV, generator=g).bfloat16()
        w = (torch.randn(n, k, device=DEV, generator=g) / k**0.5).bfloat16()
        b = (0.1 * torch.randn(n, device=DEV, generator=g)).bfloat16()
        x = torch.randn(t, n, device=DEV, generator=g).bfloat16()
        tflop = 2 * t * n * k / 1e12
        ways = {"F.linear": lambda a=a, w=w, b=b: F.linear(a, w, b),
                "x.addmm_": lambda a=a, w=w, x=x: x.addmm_(a, w.t())}  # fmt: skip
        for r in range(rounds):
            for how, fn in ways.items():
                sec = timed(fn)
                record(f"{name} {how}", {"round": r}, sec, tflop_s=tflop / sec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    t, d, f, heads = (256, 128, 512, 2) if a.quick else (a.tokens, 2560, 10240, 40)
    if fused.triton_ok(torch.empty(1, device=DEV)):
        sweep_layer_norm(t, d)
        sweep_gelu(t, f)
        sweep_rotary(t, d, heads)
    else:
        print("no Triton on this device: kernel sweeps skipped")
    alternate_matmuls(t, d, f, 1 if a.quick else a.rounds)
    h.write_json(a.out, {"bench": "fused_sweep", "machine": h.machine_info(), "tokens": t,
                         "dim": d, "ffn": f, "heads": heads, "rows": ROWS})  # fmt: skip
    return 0


if fused.HAVE_TRITON:
    import triton

if __name__ == "__main__":
    sys.exit(main())
