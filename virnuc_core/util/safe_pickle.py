"""Safe loading of the original tool's pickled classifier files.

VirNucPro's ``300_model.pth`` / ``500_model.pth`` are whole ``MLPClassifier`` modules pickled by
its training script. Unpickling them the ordinary way imports and calls whatever the pickle names,
i.e. it can run arbitrary code from the file. This module reads them through ``torch.load`` with an
allow-list unpickler instead: nothing named by the file is imported or called beyond a fixed set of
tensor rebuilders and built-in containers, and the module classes become inert :class:`StandIn`
objects that only hold their pickled state. :mod:`virnuc_core.engine.models.classify` turns that
state into its own network.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import types
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from virnuc_core.util.corrupt import torch_detail, torch_file_problem, unreadable

CLASSIFIER_TODO = (
    "Get the classifier file again (VirNucPro's 300_model.pth or 500_model.pth from its "
    "repository), or restore it from a copy you trust."
)


class UnsafeClassifierError(pickle.UnpicklingError):
    """The classifier file names a global outside the allow-list (it was not imported)."""


class ClassifierFormatError(ValueError):
    """The classifier file loaded safely but does not hold the expected MLP."""


class StandIn:
    """Inert stand-in for a pickled module class: keeps the state the pickle hands it, no more.

    ``_virnuc_name`` is the pickled class's qualified name, ``_virnuc_state`` its pickled state.
    """

    _virnuc_name = "?"
    dump_patches = False  # read by torch's legacy loader when the pickled class source differs

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_virnuc_state", {})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        merged: dict = {}
        for part in (state, slots):
            if part is None:
                continue
            if not isinstance(part, Mapping):
                raise ClassifierFormatError(
                    f"unexpected pickled state ({type(part).__name__}) for {self._virnuc_name}"
                )
            merged.update(part)
        object.__setattr__(self, "_virnuc_state", merged)

    def __repr__(self) -> str:
        return f"<stand-in for {self._virnuc_name}>"


def _stand_in(qualname: str) -> type:
    return type(f"StandIn[{qualname}]", (StandIn,), {"_virnuc_name": qualname})


class _UntypedStorageRef:
    """Stands for ``torch.UntypedStorage`` in a storage reference; torch.load reads only .dtype."""

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8


def _private_callable(fn: Any) -> Any:
    """A fresh wrapper, so a pickle's BUILD on it can touch nothing of torch's own."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    call.__name__ = call.__qualname__ = fn.__name__
    return call


_MODULE_CLASSES = (
    ("torch.nn.modules.linear", "Linear"),
    ("torch.nn.modules.batchnorm", "BatchNorm1d"),
    ("torch.nn.modules.dropout", "Dropout"),
    ("torch.nn.modules.activation", "ReLU"),
)
_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
}
_IMMUTABLE_TYPES = {  # C types: a pickle cannot set attributes on them
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves globals from the allow-list only; never imports anything.

    The allow-list is what torch 2.x (checked with 2.13, zip and legacy formats) writes for a
    module of Linear/BatchNorm1d/Dropout:

    * the tensor rebuilders ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` /
      ``_rebuild_parameter`` (through private wrappers), ``torch.UntypedStorage`` (as an inert
      marker with ``dtype`` uint8, all torch.load reads of it; typed storage names such as
      ``torch.FloatStorage`` are turned into an inert ``StorageType`` by ``torch.load`` itself
      before they reach us), ``collections.OrderedDict``, ``builtins.set``/``frozenset``
      (``__builtin__.set`` under protocol 2; Python 2 names are mapped as pickle maps them, for
      the lookup only);
    * the module classes (``*.MLPClassifier`` of any module, ``torch.nn.modules.linear.Linear``,
      ``...batchnorm.BatchNorm1d``, ``...dropout.Dropout``, ``...activation.ReLU``) are mapped to
      inert stand-in classes that only keep the state the pickle hands them. Nothing of
      ``__main__`` or ``torch.nn`` is looked up for them.

    Any other global is refused with :class:`UnsafeClassifierError` naming it; it is never
    imported, let alone called.

    Everything it hands out that a pickle could mutate (BUILD sets attributes) is private to this
    one load: fresh stand-in classes, fresh wrappers around torch's tensor rebuilders, a fresh
    storage-type marker. The rest are immutable built-in types.
    """

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        table: dict[tuple[str, str], Any] = dict(_IMMUTABLE_TYPES)
        table.update({key: _private_callable(fn) for key, fn in _REBUILDERS.items()})
        table.update({key: _stand_in(".".join(key)) for key in _MODULE_CLASSES})
        untyped = _UntypedStorageRef()
        table[("torch", "UntypedStorage")] = table[("torch.storage", "UntypedStorage")] = untyped
        self._virnuc_table = table

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        # Protocol-2 pickles use Python 2 names (``__builtin__.set``, ``commands.Popen``); map them
        # the way pickle's own find_class would, only to look them up here and to name them.
        py3 = _compat_pickle.NAME_MAPPING.get((module, name))
        if py3 is None:
            py3 = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        table = self._virnuc_table
        if py3 in table:
            return table[py3]
        if name == "MLPClassifier":
            # The training script's own class (normally __main__.MLPClassifier): never looked up.
            table[py3] = _stand_in(f"{py3[0]}.{name}")
            return table[py3]
        shown = f"'{py3[0]}.{py3[1]}'"
        if py3 != (module, name):
            shown += f" (pickled as '{module}.{name}')"
        raise UnsafeClassifierError(
            f"refusing global {shown}: not in the classifier allow-list "
            "(it was neither imported nor called)"
        )


def safe_pickle_load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` through the allow-list unpickler (refuses any other global)."""
    return _AllowListUnpickler(file, **kwargs).load()


# torch.load wants a module-like object with Unpickler and load (load: legacy format headers).
_SAFE_PICKLE = types.ModuleType("virnuc_allowlist_pickle")
_SAFE_PICKLE.Unpickler = _AllowListUnpickler  # type: ignore[attr-defined]
_SAFE_PICKLE.load = safe_pickle_load  # type: ignore[attr-defined]
_SAFE_PICKLE.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def _is_torchscript(buf: io.BytesIO, path: str) -> bool:
    """Whether the zip archive in ``buf`` holds TorchScript's constants.pkl; rewinds ``buf``."""
    try:
        if not zipfile.is_zipfile(buf):
            return False
        with zipfile.ZipFile(buf) as zf:
            return any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        problem = f"its zip archive is damaged: {e}"
        raise unreadable(path, "model file", problem, CLASSIFIER_TODO) from None
    finally:
        buf.seek(0)


def torch_load_safely(raw: bytes, path: str) -> Any:
    """``torch.load`` of a file's bytes (CPU) through the allow-list; ``path`` names it in errors.

    TorchScript archives (which ``torch.load`` would hand to ``torch.jit.load``) are refused with
    :class:`UnsafeClassifierError`. Module classes come back as :class:`StandIn` objects.
    """
    buf = io.BytesIO(raw)
    if _is_torchscript(buf, path):
        raise UnsafeClassifierError(
            f"{path} is a TorchScript archive; only torch.save'd modules or state dicts "
            "are accepted"
        )
    if os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        # torch.load would then reject any pickle_module, ours included.
        raise RuntimeError(
            f"cannot load {path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which makes torch.load "
            "refuse the allow-list unpickler used here; unset it for this step"
        )
    try:
        with warnings.catch_warnings():
            # legacy format: the saved class source is compared with our stand-in's; irrelevant
            warnings.simplefilter("ignore", torch.serialization.SourceChangeWarning)
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code for container")
            return torch.load(
                buf, map_location="cpu", pickle_module=_SAFE_PICKLE, weights_only=False, mmap=False
            )
    except (UnsafeClassifierError, ClassifierFormatError):
        raise  # the file is readable; its content is refused, and the message says why
    except Exception as e:  # noqa: BLE001 - anything else means the bytes do not parse
        # torch's own messages (invalid load key, negative seek value, ...) name no file
        problem = torch_file_problem(raw) or torch_detail(e)
        raise unreadable(path, "model file", problem, CLASSIFIER_TODO) from None
