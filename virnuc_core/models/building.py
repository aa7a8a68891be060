"""Building a model's modules without initialising what a checkpoint overwrites."""

from __future__ import annotations

import contextlib

from torch import nn


@contextlib.contextmanager
def no_weight_init():
    """Skip random initialisation while a model is built that a checkpoint then fills.

    Initialising ESM-2 3B's parameters on the CPU takes about a minute, DNABERT-S's about a
    second, and is thrown away at once. The parameters hold whatever memory held: anything a
    checkpoint does not set (ESM-2's contact head without its regression file) is never used
    for embeddings.
    """
    layers = (nn.Linear, nn.Embedding, nn.LayerNorm)
    saved = [layer.reset_parameters for layer in layers]
    try:
        for layer in layers:
            layer.reset_parameters = lambda self: None
        yield
    finally:
        for layer, method in zip(layers, saved, strict=True):
            layer.reset_parameters = method
