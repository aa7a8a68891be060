"""Does the classifier file match the chunk length? Checked by content, before any job runs.

VirNucPro published one classifier per chunk length, ``300_model.pth`` and ``500_model.pth``;
a model used with the other length gives wrong calls without any error. Their git blob ids
(read from VirNucPro's repository history; the files themselves are not obtainable here) let
:func:`check_classifier` recognise them by content, whatever they are named. It reads the file
once (sha256 and git blob id from the same 8 MiB blocks) and never unpickles it.
:func:`check_readable` refuses a damaged (corrupt, truncated) file by its structure alone.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from virnuc_core.util.corrupt import torch_file_problem, unreadable
from virnuc_core.util.digests import file_digests


@dataclass(frozen=True)
class KnownClassifier:
    """A published classifier: its file name and the chunk length it was trained for."""

    name: str
    chunk_length: int


# git blob id -> classifier (VirNucPro's repository; the broad fork carries the same blobs)
KNOWN_CLASSIFIERS: Mapping[str, KnownClassifier] = {
    "a0b5b85e7c1e44f00cde146d091beb82b2c8e855": KnownClassifier("300_model.pth", 300),
    "fc35d5ef9f1f4564eea7036f34f4f8ec6000d33d": KnownClassifier("500_model.pth", 500),
}


class ClassifierMismatchError(ValueError):
    """The classifier cannot be used with this configuration (missing, or another length)."""


class UncheckedClassifierWarning(UserWarning):
    """The classifier is not a known one, so its chunk length cannot be checked."""


def check_classifier(
    path: str | os.PathLike | None,
    chunk_length: int,
    known: Mapping[str, KnownClassifier] = KNOWN_CLASSIFIERS,
) -> str | None:
    """Check the configured classifier against ``chunk_length``; its sha256 (None for ``tiny``
    or no classifier).

    - a known file made for another chunk length: ClassifierMismatchError naming the length it
      was made for and the file to use instead;
    - an unknown file: an :class:`UncheckedClassifierWarning` (its chunk length cannot be
      checked), and its sha256 all the same, for the outputs' attributes;
    - a missing path: ClassifierMismatchError naming the path.
    """
    if path is None or os.fspath(path) == "tiny":
        return None  # the demo's random classifier, or a run that stops before predictions
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is not a file" if p.exists() else "does not exist"
        raise ClassifierMismatchError(f"classifier {p} {what}: set classifier to the model file")
    digests = file_digests(p, ("sha256", "git_blob"))
    found = known.get(digests["git_blob"])
    if found is None:
        warnings.warn(
            f"classifier {p} (sha256 {digests['sha256']}) is not one of VirNucPro's published "
            f"classifiers, so whether it was trained on {chunk_length}-base chunks cannot be "
            "checked: make sure it was.",
            UncheckedClassifierWarning,
            stacklevel=2,
        )
    elif found.chunk_length != chunk_length:
        others = [k for k in known.values() if k.chunk_length == chunk_length]
        use = f"use {others[0].name}" if others else "use a classifier trained for that length"
        raise ClassifierMismatchError(
            f"classifier {p} is VirNucPro's {found.name}, made for chunk_length "
            f"{found.chunk_length}, but chunk_length is {chunk_length}: {use}, or set "
            f"chunk_length to {found.chunk_length}."
        )
    return digests["sha256"]


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a well-formed safetensors file (its header and data size), or None."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return "shorter than a safetensors header"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return f"its header claims {n} bytes, the file holds {size - 8} after the length"
        try:
            header = json.loads(handle.read(n))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            return f"its header is not a safetensors header: {e}"
    need = max(ends, default=0)
    if 8 + n + need != size:
        return f"its tensors need {need} bytes of data, the file holds {size - 8 - n}"
    return None


def check_readable(path: str | os.PathLike | None) -> None:
    """Refuse a classifier file whose bytes are damaged (corrupt, truncated), naming it, before
    any job runs. Only its structure is read (zip records, pickle opcodes, a safetensors
    header): nothing is unpickled. What the file holds is checked when it is loaded."""
    if path is None or os.fspath(path) == "tiny":
        return
    p = Path(path).expanduser()
    problem = _safetensors_problem(p) if p.suffix == ".safetensors" else torch_file_problem(p)
    if problem:
        # imported here: safe_pickle imports torch, which the Snakefile (importing this module
        # for every run) should not wait for
        from virnuc_core.util.safe_pickle import CLASSIFIER_TODO

        raise unreadable(p, "model file", problem, CLASSIFIER_TODO)
