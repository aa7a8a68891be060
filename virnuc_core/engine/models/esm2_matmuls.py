"""How ESM-2's fused engine runs a layer's matmuls (:class:`LinearOps`): cuBLAS in bf16/fp16/fp32
or ``torch._scaled_mm`` in fp8, out and fc2 adding into the residual stream, fc1's GELU as a
pass or in a matmul epilogue. The layers that use it are in :mod:`virnuc_core.engine.models.esm2`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from virnuc_core.engine import fused as fk
from virnuc_core.engine.fp8 import ScaledMM

LINEARS = ("qkv", "out", "fc1", "fc2")  # a layer's matmuls, in order
RESIDUAL_MATMULS = ("out", "fc2")  # those whose products are added to the residual stream
GELU_WORDS = {  # gelu_epilogue -> how the outputs' attributes say it
    "": "GELU one pass",
    "triton": "GELU in a Triton fc1 matmul epilogue",
    "cublaslt": "GELU in fc1's epilogue (cuBLASLt on CUDA, its tanh form; PyTorch's erf elsewhere)",
}
GELU_EPILOGUES = tuple(GELU_WORDS)


class LinearOps:
    """How the fused engine runs a layer's matmuls: bf16/fp16/fp32 (cuBLAS) or fp8.

    ``fp8_layers``: which of :data:`LINEARS` run in fp8 (all four for ``precision="fp8"``; a
    subset is a bench lever). Their inputs arrive as (e4m3 values, per-row scales) from the
    kernel that made them, and their ``nn.Linear`` carries ``weight_fp8`` / ``weight_scale``
    (see :meth:`PackedESM2.from_fair`).

    ``residual_in_matmul``: which of "out" and "fc2" add their products into the residual
    stream themselves; ``rotary_in_attention``, ``gelu_epilogue``: the module docstring. With
    ``residual_in_matmul=()`` the engine is the one measured before them (bench/esm2_levers.py).
    """

    def __init__(
        self,
        fp8: bool = False,
        gelu_epilogue: str = "",
        fast_accum: bool = True,
        fp8_layers: tuple[str, ...] = LINEARS,
        residual_in_matmul: tuple[str, ...] = RESIDUAL_MATMULS,
        rotary_in_attention: bool = False,
    ):
        if gelu_epilogue not in GELU_EPILOGUES:
            raise ValueError(
                f"gelu_epilogue must be one of {GELU_EPILOGUES}, got {gelu_epilogue!r}"
            )
        self.fp8_layers = frozenset(fp8_layers) if fp8 else frozenset()
        self.fp8 = bool(self.fp8_layers)
        self.gelu_epilogue = "" if "fc1" in self.fp8_layers else gelu_epilogue
        self.scaled_mm = ScaledMM(fast_accum) if self.fp8 else None
        # torch._scaled_mm cannot add into its output: only bf16 out/fc2 matmuls accumulate
        unknown = set(residual_in_matmul) - set(RESIDUAL_MATMULS)
        if unknown:
            raise ValueError(f"residual_in_matmul: only {RESIDUAL_MATMULS} add into the stream")
        self.residual_in_matmul = tuple(
            n for n in RESIDUAL_MATMULS if n in residual_in_matmul and n not in self.fp8_layers
        )
        self.rotary_in_attention = rotary_in_attention

    def quantized(self, name: str) -> bool:
        """Whether the matmul ``name`` runs in fp8 (its input must then be quantised)."""
        return name in self.fp8_layers

    def linear(self, h, lin: nn.Linear, name: str) -> torch.Tensor:
        """``lin(h)``; h is a tensor, or (values, scales) for an fp8 matmul."""
        if name not in self.fp8_layers:
            return F.linear(h, lin.weight, lin.bias)
        return self.scaled_mm(*h, lin.weight_fp8, lin.weight_scale, lin.bias)

    def residual(self, x: torch.Tensor, a, lin: nn.Linear, name: str) -> torch.Tensor | None:
        """The residual update ``lin(a)``: added into x by the matmul itself (``x += a W^T``,
        in place; its bias is left to the LayerNorms' shift) and None returned, or returned
        for the next LayerNorm kernel to add."""
        if name in self.residual_in_matmul:
            x.addmm_(a, lin.weight.t())
            return None
        return self.linear(a, lin, name)

    def prepare(self, a: torch.Tensor):
        """The output projection's input: as it is, or quantised per row for fp8."""
        return fk.quantize_rows(a) if self.quantized("out") else a

    def fc1_gelu(self, h, lin: nn.Linear):
        """GELU(fc1(h)), ready for fc2: one extra pass, none (epilogue), or GELU + quantise."""
        if self.gelu_epilogue == "triton":
            return fk.linear_gelu(h, lin.weight, lin.bias)
        if self.gelu_epilogue == "cublaslt":
            return torch._addmm_activation(lin.bias, h, lin.weight.t(), use_gelu=True)
        u = self.linear(h, lin, "fc1")
        return fk.quantize_rows(u, apply_gelu=True) if self.quantized("fc2") else fk.gelu(u)

    def describe(self) -> str:
        """One line for the outputs' attributes."""
        if self.fp8:
            accum = "fast accumulation" if self.scaled_mm.fast_accum else "fp32 accumulation"
            which = "/".join(n for n in LINEARS if n in self.fp8_layers)
            return (
                f"fused kernels; fp8 e4m3 matmuls ({which}; torch._scaled_mm, per-token "
                f"activation and per-output-channel weight scales, {accum}); LayerNorm, softmax, "
                "residual stream bf16, pooling fp32"
            )
        gelu = GELU_WORDS[self.gelu_epilogue]
        residual = (
            f"{'/'.join(self.residual_in_matmul)} add into the residual stream (biases carried "
            "into the LayerNorms)"
            if self.residual_in_matmul
            else "residual+LayerNorm"
        )
        rotary = "rotary in the Triton attention kernel" if self.rotary_in_attention else "rotary"
        return f"fused kernels ({residual}, {rotary} when it runs, {gelu}); cuBLAS matmuls"
