"""torch.compile with only the token dimension dynamic: one graph for every batch, same results."""

from __future__ import annotations

import logging

import torch

from virnuc_core.engine.compiling import TokenwiseCompiled
from virnuc_core.engine.models.dnabert import _post_attention as post_attention


def dynamo_frames() -> int:
    from torch._dynamo.utils import counters

    return counters["frames"]["ok"]


def layer_inputs(tokens: int, dim: int = 16, inter: int = 32, seed: int = 0):
    """DNABERT-S's post-attention work (the compiled one): attention output, residual, the
    layer's weights, its intermediate size and LayerNorm eps."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    attn, x = r(tokens, dim), r(tokens, dim)
    weights = (r(dim, dim), r(dim), r(dim), r(dim), r(2 * inter, dim), r(dim, inter), r(dim))
    return (attn, x, (*weights, r(dim), r(dim)), inter, 1e-5)


def test_one_graph_serves_every_token_count():
    torch._dynamo.reset()
    op = TokenwiseCompiled(post_attention, token_args=(0, 1), backend="aot_eager")
    before = dynamo_frames()
    for tokens in (37, 11, 64, 2):
        args = layer_inputs(tokens, seed=tokens)
        torch.testing.assert_close(op(*args), post_attention(*args), rtol=1e-5, atol=1e-5)
    assert dynamo_frames() - before == 1  # compiled once, for the first batch only
    assert op.failed is None


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    op = TokenwiseCompiled(post_attention, token_args=(0, 1), backend="aot_eager")

    def broken(*args):
        raise torch._dynamo.exc.TorchDynamoException("backend compiler failed: no C compiler")

    monkeypatch.setattr(op, "compiled", broken)
    args = layer_inputs(9)
    with caplog.at_level(logging.WARNING, logger="virnuc.compile"):
        out = op(*args)
    torch.testing.assert_close(out, post_attention(*args))
    assert op.failed and "no C compiler" in op.failed
    assert "running eagerly" in caplog.text
    torch.testing.assert_close(op(*args), post_attention(*args))  # stays eager
