"""fp8 (e4m3) linear layers: weights quantised per output channel, activations per row.

``precision: fp8`` (ESM-2 only) runs the four matmuls of every layer (q/k/v, output projection,
fc1, fc2) as fp8 x fp8 -> bf16 products through ``torch._scaled_mm`` with row-wise scales (the
CUTLASS kernel PyTorch ships for Hopper): ``out[i, j] = scale_a[i] * scale_w[j] *
sum_k a8[i, k] * w8[j, k] + bias[j]``. Everything else stays as in bf16: the residual stream,
LayerNorm, softmax and attention (bf16 in, fp32 inside), pooling (fp32).

Scales: a weight row (one output channel) or an activation row (one token) is divided by
amax / 448, so its largest value lands on e4m3's largest finite value; the quantised activations
come straight out of the kernels that produce them (:mod:`virnuc_core.engine.fused`: LayerNorm,
GELU, attention output), never as a separate bf16 pass.

Where ``_scaled_mm`` cannot run (the CPU, GPUs before Hopper / Ada), :func:`scaled_mm` emulates
the same product in fp32 from the same e4m3 values: the CPU tests check the maths with it.
"""

from __future__ import annotations

import logging

import torch

from virnuc_core.engine.fused import quantize_rows_reference

log = logging.getLogger("virnuc.fp8")


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 (N, K) row-major, (1, N) fp32 scales) of an (N, K) weight, one scale per row."""
    q, scale = quantize_rows_reference(w)
    return q.contiguous(), scale.reshape(1, -1).contiguous()


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp32 values of e4m3 ``q`` with per-row (rows, 1) or per-column (1, cols) ``scale``."""
    return q.to(torch.float32) * scale


def hardware_fp8(device: torch.device) -> bool:
    """Whether ``torch._scaled_mm`` runs fp8 on this device (compute capability >= 8.9)."""
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


class ScaledMM:
    """fp8 x fp8 -> bf16 products with row-wise scales; remembers what the kernel accepts.

    ``fast_accum``: Hopper's faster fp8 accumulation (no periodic promotion to fp32 inside the
    kernel); ``bias_in_kernel`` is turned off (bias added after) if this PyTorch's row-wise
    kernel refuses a bias.
    """

    def __init__(self, fast_accum: bool = True):
        self.fast_accum = fast_accum
        self.bias_in_kernel = True

    def __call__(self, a8, a_scale, w8, w_scale, bias, out_dtype=torch.bfloat16):
        """``(a8 * a_scale) @ (w8 * w_scale.T).T + bias`` in ``out_dtype``."""
        if not hardware_fp8(a8.device):
            out = dequantize(a8, a_scale) @ dequantize(w8, w_scale.reshape(-1, 1)).T
            return (out if bias is None else out + bias.float()).to(out_dtype)
        if self.bias_in_kernel:
            try:
                return self._mm(a8, a_scale, w8, w_scale, bias, out_dtype)
            except RuntimeError as e:
                self.bias_in_kernel = False
                log.warning("row-wise fp8 matmul refused a bias (%s); adding it after", e)
        out = self._mm(a8, a_scale, w8, w_scale, None, out_dtype)
        return out if bias is None else out.add_(bias)

    def _mm(self, a8, a_scale, w8, w_scale, bias, out_dtype):
        return torch._scaled_mm(
            a8,
            w8.t(),  # (K, N) column-major, as the kernel wants its second operand
            scale_a=a_scale,
            scale_b=w_scale,
            bias=bias,
            out_dtype=out_dtype,
            use_fast_accum=self.fast_accum,
        )


def measure_fp8_tflops(n: int = 8192, iters: int = 20) -> float | None:
    """fp8 row-wise-scaled n^3 matmul rate (TFLOP/s) on the current GPU; None without one."""
    device = torch.device("cuda")
    if not torch.cuda.is_available() or not hardware_fp8(device):
        return None
    g = torch.Generator(device=device).manual_seed(0)
    a, a_s = quantize_rows_reference(torch.randn(n, n, device=device, generator=g))
    w, w_s = quantize_weight(torch.randn(n, n, device=device, generator=g))
    mm = ScaledMM()
    for _ in range(3):
        mm(a, a_s, w, w_s, None)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        mm(a, a_s, w, w_s, None)
    end.record()
    end.synchronize()
    return 2.0 * n**3 * iters / (start.elapsed_time(end) / 1000.0) / 1e12
