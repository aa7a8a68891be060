"""Does the classifier file match the chunk length? Checked by content, before any job runs.

VirNucPro published one classifier per chunk length, ``300_model.pth`` and ``500_model.pth``;
a model used with the other length gives wrong calls without any error. Their git blob ids
(read from VirNucPro's repository history; the files themselves are not obtainable here) let
:func:`check_classifier` recognise them by content, whatever they are named. It reads the file
once (sha256 and git blob id from the same 8 MiB blocks) and never unpickles it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from virnuc_core.digests import file_digests


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
