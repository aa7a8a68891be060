"""How ESM-2's layers run their matmuls (:class:`LinearOps`): cuBLAS, the output projection and
fc2 adding their products into the residual stream, fc1 with its GELU in the matmul's epilogue.
The layers that use it are in :mod:`virnuc_core.engine.models.esm2`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESIDUAL_MATMULS = ("out", "fc2")  # the matmuls whose products are added to the residual stream
# fc1 + GELU in one call (torch._addmm_activation): cuBLASLt's GELU epilogue on CUDA, which is
# the tanh form (fair-esm's is the erf form: at most about 5e-4 apart, under bf16's rounding);
# PyTorch computes the erf form elsewhere. +5.3% tokens/s on an H200 (bench/results/README.md).
GELU_WORDS = "GELU in fc1's epilogue (cuBLASLt on CUDA, its tanh form; PyTorch's erf elsewhere)"


class LinearOps:
    """How a layer's matmuls run. ``residual_in_matmul``: which of "out" and "fc2" add their
    products into the residual stream themselves (cuBLAS with beta = 1), their biases then
    carried into the next LayerNorm (:meth:`PackedESM2.pending_biases`); both by default, the
    production path. ``()`` is the engine measured before round 3 (a bench comparison)."""

    def __init__(self, residual_in_matmul: tuple[str, ...] = RESIDUAL_MATMULS):
        unknown = set(residual_in_matmul) - set(RESIDUAL_MATMULS)
        if unknown:
            raise ValueError(f"residual_in_matmul: only {RESIDUAL_MATMULS} add into the stream")
        self.residual_in_matmul = tuple(n for n in RESIDUAL_MATMULS if n in residual_in_matmul)

    def residual(self, x: torch.Tensor, a, lin: nn.Linear, name: str) -> torch.Tensor | None:
        """The residual update ``lin(a)``: added into x by the matmul itself (``x += a W^T``,
        in place; its bias is left to the LayerNorms' shift) and None returned, or returned
        for the next LayerNorm kernel to add."""
        if name in self.residual_in_matmul:
            x.addmm_(a, lin.weight.t())
            return None
        return F.linear(a, lin.weight, lin.bias)

    @staticmethod
    def fc1_gelu(h: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
        """GELU(fc1(h)), GELU in the matmul's epilogue (see ``GELU_WORDS``)."""
        return torch._addmm_activation(lin.bias, h, lin.weight.t(), use_gelu=True)

    def describe(self) -> str:
        """One line for the outputs' attributes."""
        residual = (
            f"{'/'.join(self.residual_in_matmul)} add into the residual stream (biases carried "
            "into the LayerNorms)"
            if self.residual_in_matmul
            else "residual+LayerNorm"
        )
        return f"fused kernels ({residual}, rotary when it runs, {GELU_WORDS}); cuBLAS matmuls"
