"""The classifier (spec §4): load the users' MLP safely and score frames.

Loading
-------
The users' ``300_model.pth`` / ``500_model.pth`` are whole pickled modules written by the original
training script with ``torch.save(model)``, the class living in that script's ``__main__``.
Unpickling such a file the ordinary way imports and calls whatever the pickle names, so it is
never done here. :func:`load_classifier` reads the file through
:func:`virnuc_core.util.safe_pickle.torch_load_safely`, whose unpickler resolves globals from a
fixed
allow-list only (tensor rebuilders, a few built-in containers) and maps the module classes to inert
stand-ins; any other global is refused with :class:`UnsafeClassifierError`, and TorchScript
archives are refused too. The parameters and buffers collected from the stand-ins are then loaded
into our own :class:`MLPClassifier`. A plain state dict (``hidden_layer.weight`` ...), optionally
wrapped in ``{"state_dict": ...}`` / ``{"model_state_dict": ...}``, loads through the same path;
``*.safetensors`` files through safetensors.

The verdict tables are written by :mod:`virnuc_core.report.predictions`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from virnuc_core.util.corrupt import UnreadableModelFileError as UnreadableModelFileError
from virnuc_core.util.corrupt import unreadable
from virnuc_core.util.files import atomic_path
from virnuc_core.util.safe_pickle import (
    CLASSIFIER_TODO,
    ClassifierFormatError,
    StandIn,
    torch_load_safely,
)

# Re-exported: callers catch it as virnuc_core.engine.models.classify.UnsafeClassifierError.
from virnuc_core.util.safe_pickle import UnsafeClassifierError as UnsafeClassifierError

# --------------------------------------------------------------------------------------------
# The network


class MLPClassifier(nn.Module):
    """Linear(D, H) -> BatchNorm1d(H) -> ReLU -> Dropout(0.5) -> Linear(H, 2), as the original."""

    def __init__(
        self, input_dim: int, hidden_dim: int = 512, num_class: int = 2, eps: float = 1e-5
    ):
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim, eps=eps)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    @property
    def input_dim(self) -> int:
        return self.hidden_layer.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hidden_layer(x)
        x = self.bn1(x)
        x = F.relu(x)
        x = self.dropout(x)
        return self.output_layer(x)


# --------------------------------------------------------------------------------------------
# From loaded objects to tensors

_LAYOUT = {
    "hidden_layer": "torch.nn.modules.linear.Linear",
    "bn1": "torch.nn.modules.batchnorm.BatchNorm1d",
    "output_layer": "torch.nn.modules.linear.Linear",
    "dropout": "torch.nn.modules.dropout.Dropout",
}


def _tensors_of(module: StandIn, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = module._virnuc_state
    for group in ("_parameters", "_buffers"):
        items = state.get(group) or {}
        if not isinstance(items, Mapping):
            raise ClassifierFormatError(f"{prefix or 'model'}: {group} is not a mapping")
        for key, value in items.items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise ClassifierFormatError(f"{prefix}{key} is a {type(value).__name__}")
            out[f"{prefix}{key}"] = value.detach()


def _from_module(root: StandIn, path: str) -> tuple[dict[str, torch.Tensor], float]:
    if not root._virnuc_name.endswith("MLPClassifier"):
        raise ClassifierFormatError(f"{path}: top-level object is {root._virnuc_name}")
    children = root._virnuc_state.get("_modules") or {}
    if set(children) != set(_LAYOUT):
        raise ClassifierFormatError(
            f"{path}: MLPClassifier has submodules {sorted(children)}, expected {sorted(_LAYOUT)}"
        )
    tensors: dict[str, torch.Tensor] = {}
    _tensors_of(root, "", tensors)
    for name, expected_cls in _LAYOUT.items():
        child = children[name]
        if not isinstance(child, StandIn) or child._virnuc_name != expected_cls:
            raise ClassifierFormatError(
                f"{path}: submodule {name} is {getattr(child, '_virnuc_name', type(child))}, "
                f"expected {expected_cls}"
            )
        _tensors_of(child, f"{name}.", tensors)
    bn_state = children["bn1"]._virnuc_state
    if bn_state.get("track_running_stats") is False:
        raise ClassifierFormatError(f"{path}: bn1 was built without running statistics")
    eps = bn_state.get("eps", 1e-5)
    if not isinstance(eps, float) or not eps > 0:
        raise ClassifierFormatError(f"{path}: bn1.eps is {eps!r}")
    return tensors, eps


def _from_mapping(obj: Mapping, path: str) -> dict[str, torch.Tensor]:
    for wrapper in ("model_state_dict", "state_dict"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    tensors = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ClassifierFormatError(
                f"{path}: not a state dict of the MLP (entry {key!r} is {type(value).__name__})"
            )
        tensors[key.removeprefix("module.")] = value.detach()
    return tensors


def _expect_shape(tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], path: str):
    if key not in tensors:
        raise ClassifierFormatError(f"{path}: missing {key}")
    t = tensors[key]
    if tuple(t.shape) != shape:
        raise ClassifierFormatError(f"{path}: {key} has shape {tuple(t.shape)}, expected {shape}")
    if not t.is_floating_point() and key != "bn1.num_batches_tracked":
        raise ClassifierFormatError(f"{path}: {key} has dtype {t.dtype}")


def _build(tensors: dict[str, torch.Tensor], eps: float, path: str) -> MLPClassifier:
    if "hidden_layer.weight" not in tensors or tensors["hidden_layer.weight"].dim() != 2:
        raise ClassifierFormatError(f"{path}: no 2-d hidden_layer.weight; not the VirNucPro MLP")
    hidden, in_dim = tensors["hidden_layer.weight"].shape
    hidden, in_dim = int(hidden), int(in_dim)
    expected = {
        "hidden_layer.weight": (hidden, in_dim),
        "hidden_layer.bias": (hidden,),
        "bn1.weight": (hidden,),
        "bn1.bias": (hidden,),
        "bn1.running_mean": (hidden,),
        "bn1.running_var": (hidden,),
        "output_layer.weight": (2, hidden),
        "output_layer.bias": (2,),
    }
    for key, shape in expected.items():
        _expect_shape(tensors, key, shape, path)
    extra = set(tensors) - set(expected) - {"bn1.num_batches_tracked"}
    if extra:
        raise ClassifierFormatError(f"{path}: unexpected entries {sorted(extra)}")
    model = MLPClassifier(in_dim, hidden, 2, eps=eps)
    state = {k: tensors[k].to(torch.float32) for k in expected}
    nbt = tensors.get("bn1.num_batches_tracked")
    state["bn1.num_batches_tracked"] = (
        nbt.to(torch.long).reshape(()) if nbt is not None else torch.tensor(0, dtype=torch.long)
    )
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_classifier(
    path: str | os.PathLike, expected_dim: int | Mapping[str, int] | None = None
) -> MLPClassifier:
    """Load the VirNucPro MLP from a whole-module pickle or a state dict, without running code.

    ``expected_dim``: the widths of the features the caller will feed, as the models that made
    them have them, ``{"dnabert": 768, "esm": 2560}`` (DNABERT-S first), or their sum. A
    classifier of another input width is refused, the message giving both widths. Returned in
    eval mode on CPU. A file that is not readable (corrupt, truncated) raises
    :class:`UnreadableModelFileError`; one that names code to run, :class:`UnsafeClassifierError`.
    """
    path = os.fspath(path)
    raw = Path(path).read_bytes()
    if path.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        try:
            obj: Any = load_safetensors(raw)
        except Exception as e:  # noqa: BLE001 - safetensors' own error type names no file
            raise unreadable(path, "model file", str(e), CLASSIFIER_TODO) from None
    else:
        obj = torch_load_safely(raw, path)
    if isinstance(obj, StandIn):
        tensors, eps = _from_module(obj, path)
    elif isinstance(obj, Mapping):
        tensors, eps = _from_mapping(obj, path), 1e-5
    else:
        raise ClassifierFormatError(
            f"{path}: holds a {type(obj).__name__}, not an MLPClassifier module or a state dict"
        )
    model = _build(tensors, eps, path)
    if expected_dim is not None:
        check_width(model.input_dim, expected_dim, path)
    return model


VIRNUCPRO_DIMS = {"dnabert": 768, "esm": 2560}  # DNABERT-S + ESM-2 3B: what 300/500_model.pth take
_NAMES = {"dnabert": "DNABERT-S", "esm": "ESM-2"}


def check_width(input_dim: int, dims: int | Mapping[str, int], path: str) -> None:
    """Refuse a classifier whose input width is not the features' (``dims``: per model or sum)."""
    if isinstance(dims, Mapping):
        total = sum(int(v) for v in dims.values())
        parts = " + ".join(f"{int(v)} {_NAMES.get(k, k)}" for k, v in dims.items())
        features = f"{total} wide ({parts})"
    else:
        total, features = int(dims), f"{int(dims)} wide"
    if input_dim == total:
        return
    official = " + ".join(f"{v} {_NAMES[k]}" for k, v in VIRNUCPRO_DIMS.items())
    raise ClassifierFormatError(
        f"classifier {path} takes {input_dim}-wide input, but the features are {features}: it "
        f"was trained on other models' embeddings. Use a classifier trained on these models "
        f"(VirNucPro's 300_model.pth / 500_model.pth take {sum(VIRNUCPRO_DIMS.values())} = "
        f"{official}, from zhihan1996/DNABERT-S and esm2_t36_3B_UR50D)."
    )


def tiny_classifier(in_dim: int, hidden: int = 32, seed: int = 0) -> MLPClassifier:
    """A seeded random classifier (non-trivial BN statistics) for demos and tests."""
    gen = torch.Generator().manual_seed(seed)
    model = MLPClassifier(in_dim, hidden, 2)
    with torch.no_grad():
        model.hidden_layer.weight.copy_(torch.randn(hidden, in_dim, generator=gen) / in_dim**0.5)
        model.hidden_layer.bias.copy_(torch.randn(hidden, generator=gen) * 0.1)
        model.bn1.weight.copy_(1.0 + 0.2 * torch.randn(hidden, generator=gen))
        model.bn1.bias.copy_(0.1 * torch.randn(hidden, generator=gen))
        model.bn1.running_mean.copy_(0.1 * torch.randn(hidden, generator=gen))
        model.bn1.running_var.copy_(0.5 + torch.rand(hidden, generator=gen))
        model.bn1.num_batches_tracked.fill_(100)
        model.output_layer.weight.copy_(torch.randn(2, hidden, generator=gen) / hidden**0.5)
        model.output_layer.bias.copy_(torch.randn(2, generator=gen) * 0.1)
    return model.eval()


def save_state(model: MLPClassifier, path: str | os.PathLike) -> None:
    """Save the model's state dict (loadable by :func:`load_classifier`), atomically."""
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


# --------------------------------------------------------------------------------------------
# Scoring and verdicts


def predict_scores(model: MLPClassifier, features: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Softmax scores (N x 2, float32 like the original): column 0 = others, 1 = virus."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != model.input_dim:
        raise ValueError(
            f"features have shape {features.shape}; the classifier takes rows of "
            f"{model.input_dim} values"
        )
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    model.eval()
    device = next(model.parameters()).device
    out = np.empty((features.shape[0], 2), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, features.shape[0], batch):
            x = torch.from_numpy(np.ascontiguousarray(features[start : start + batch], np.float32))
            probs = F.softmax(model(x.to(device)), dim=1)
            out[start : start + len(x)] = probs.cpu().numpy()
    return out


def classifier_for(spec: str, dims: int | Mapping[str, int]) -> MLPClassifier:
    """The configured classifier: a file path, or ``tiny`` (the demo's seeded random one).

    ``dims``: the features' widths per model (``{"dnabert": ..., "esm": ...}``) or their sum.
    """
    if spec == "tiny":
        width = sum(dims.values()) if isinstance(dims, Mapping) else dims
        return tiny_classifier(int(width))
    return load_classifier(spec, expected_dim=dims)
