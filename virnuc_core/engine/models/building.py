"""Building a model's modules without initialising what a checkpoint overwrites."""

from __future__ import annotations

import contextlib
import threading

from torch import nn

# The random initialisers of torch.nn.init that model code calls itself (fair-esm's attention
# layers: xavier_uniform_ on every projection of ESM-2 3B, ~5 s on an H200 host); the modules'
# own reset_parameters call them too.
RANDOM_INITS = ("uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
                "kaiming_uniform_", "kaiming_normal_", "orthogonal_")  # fmt: skip


# The patches are process-wide: two threads building at once take turns (a nested block in
# one thread saves and restores the no-ops, the outer one the originals).
_BUILDING = threading.RLock()


def _keep(tensor, *args, **kwargs):
    return tensor


@contextlib.contextmanager
def no_weight_init():
    """Skip random initialisation while a model is built that a checkpoint then fills.

    Initialising ESM-2 3B's parameters on the CPU takes about a minute, DNABERT-S's about a
    second, and is thrown away at once. The modules' ``reset_parameters`` and the random
    initialisers of ``torch.nn.init`` (:data:`RANDOM_INITS`) do nothing inside the block. The
    parameters hold whatever memory held: anything a checkpoint does not set (ESM-2's contact
    head without its regression file) is never used for embeddings. Other threads building
    modules meanwhile would skip theirs too: build models in one thread at a time.
    """
    layers = (nn.Linear, nn.Embedding, nn.LayerNorm)
    with _BUILDING:
        saved = [layer.reset_parameters for layer in layers]
        inits = {name: getattr(nn.init, name) for name in RANDOM_INITS}
        try:
            for layer in layers:
                layer.reset_parameters = lambda self: None
            for name in RANDOM_INITS:
                setattr(nn.init, name, _keep)
            yield
        finally:
            for layer, method in zip(layers, saved, strict=True):
                layer.reset_parameters = method
            for name, init in inits.items():
                setattr(nn.init, name, init)
