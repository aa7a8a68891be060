"""torch.compile for the per-layer functions of the packed models: one graph for every batch.

Packed batches differ only in their token count. Compiling with ``dynamic=True`` makes every
size symbolic (heads and head size too), and Inductor's kernels for the rotary and LayerNorm
work then run up to 3x slower than with static sizes
(bench/results/2026-11-25-round1-h100/esm2_layer_micro_h100.json:
20.6 vs 18.5 ms per ESM-2 3B layer). Compiling per shape (``dynamic=False``) is as fast but
compiles again for every new token count. So the token dimension alone is marked dynamic:
one graph serves every batch, and every other size stays a constant.

If compilation fails (no C compiler, an unsupported GPU, a torch bug), the function runs eagerly
from then on, with one warning: results are the same, only slower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

log = logging.getLogger("virnuc.compile")


class TokenwiseCompiled:
    """``fn`` compiled (torch.compile's default mode) with only dimension 0 of the arguments at
    ``token_args`` dynamic."""

    def __init__(self, fn: Callable, token_args: Sequence[int], backend="inductor"):
        self.fn, self.token_args = fn, tuple(token_args)
        self.compiled = torch.compile(fn, backend=backend)
        self.failed: str | None = None  # why compilation failed, once it has

    def __call__(self, *args):
        if self.failed:
            return self.fn(*args)
        for i in self.token_args:
            # maybe_: a 1-token batch may be specialised instead of raising
            torch._dynamo.maybe_mark_dynamic(args[i], 0)
        try:
            return self.compiled(*args)
        except torch._dynamo.exc.TorchDynamoException as e:
            self.failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            log.warning("torch.compile of %s failed, running eagerly: %s", self.name, self.failed)
            return self.fn(*args)

    @property
    def name(self) -> str:
        """The compiled function's name (for logs)."""
        return getattr(self.fn, "__name__", repr(self.fn))
