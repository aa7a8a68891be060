"""Telling a corrupt or truncated model file apart from one that holds refused content.

``torch.load`` reports both with the same exception types and long messages that never name the
file and, for weights-only loading, advise ``weights_only=False`` (which runs code from the
file: never what we want a user to do). When a load fails, :func:`torch_file_problem` checks the
file's structure on its own, without unpickling anything: the zip archive and its records
(``torch.save``'s format since torch 1.6), or the legacy format's leading pickles, each parsed by
:mod:`pickletools` (which only reads opcodes). A structural problem means the bytes are damaged;
a sound structure with an unpickling error means the file names something the loader refuses.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import zipfile
from typing import BinaryIO

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy-format magic number, its first pickle
_LEGACY_PICKLES = 5  # magic, protocol, sys_info, the object, the storage keys


class UnreadableModelFileError(ValueError):
    """A model file whose bytes are not a readable file of its format (corrupt or truncated)."""


def unreadable(path: object, what: str, problem: str, todo: str) -> UnreadableModelFileError:
    """The one message for every unreadable model file: the file, the problem, what to do."""
    return UnreadableModelFileError(
        f"{path}: not a readable {what}: the file is corrupt or truncated ({problem}). {todo}"
    )


def _pickle_problem(f: BinaryIO, what: str) -> str | None:
    try:
        for _ in pickletools.genops(f):  # stops after STOP; raises on bad or missing bytes
            pass
    except Exception as e:  # noqa: BLE001 - any parse failure means damaged bytes
        return f"{what} is not a complete pickle: {e}"
    return None


def _zip_problem(f: BinaryIO) -> str | None:
    try:
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            pkl = [i for i in infos if i.filename.rsplit("/", 1)[-1] == "data.pkl"]
            if not pkl:
                return "its zip archive has no data.pkl record"
            for info in infos:  # parses each record's local header: cheap, one seek each
                zf.open(info).close()
            data = zf.read(pkl[0])  # checked against the archive's CRC-32
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        if "not a zip file" in str(e):  # no end of central directory: cut short, most often
            return "it starts as a zip archive but its end (the archive's directory) is missing"
        return f"its zip archive is damaged: {e}"
    return _pickle_problem(io.BytesIO(data), "data.pkl")


def _legacy_problem(f: BinaryIO) -> str | None:
    first = f.tell()
    for n in range(_LEGACY_PICKLES):
        start = f.tell()
        problem = _pickle_problem(f, f"the pickle at byte {start}")
        if problem and start == first:
            return "it is neither a zip archive (torch.save's format) nor a pickle"
        if problem:
            return problem
        if n == 0:
            f.seek(first)
            ints = [arg for _, arg, _ in pickletools.genops(f) if isinstance(arg, int)]
            if LEGACY_MAGIC not in ints:
                return "it does not start with torch's magic number: not a torch.save file"
    return None


def torch_file_problem(source: str | os.PathLike | bytes) -> str | None:
    """Why ``source`` (a path or the file's bytes) is not a well-formed ``torch.save`` file, or
    None when its structure is sound. Nothing is unpickled."""
    f: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with f:
        head = f.read(4)
        if not head:
            return "the file is empty"
        f.seek(0)
        return _zip_problem(f) if head == b"PK\x03\x04" else _legacy_problem(f)


def torch_detail(exc: BaseException) -> str:
    """A short, safe summary of a torch.load error: torch's weights-only advice is dropped."""
    text = str(exc)
    found = re.search(r"(Unsupported [^\n]*|unsupported GLOBAL [\w.]+)", text)
    if found:
        return found.group(1).rstrip(". ")
    first = text.strip().split("\n", 1)[0].split(". ", 1)[0]
    if not first or "weights_only" in first:
        return type(exc).__name__
    return f"{type(exc).__name__}: {first}"


def refused_global(exc: BaseException) -> str | None:
    """The module.name that weights-only unpickling refused, if its message names one."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return found.group(1) if found else None


def weights_only_error(
    path: object, exc: BaseException, what: str, todo: str, raw: bytes | None = None
) -> Exception:
    """Our error for a failed weights-only ``torch.load`` of ``path``.

    Damaged structure -> :class:`UnreadableModelFileError`. A sound file refused by the
    weights-only unpickler -> ``ValueError`` "refusing to load" naming the refused global. Any
    other failure -> unreadable, with torch's first sentence. Never suggests unsafe loading.
    """
    problem = torch_file_problem(path if raw is None else raw)
    if problem:
        return unreadable(path, what, problem, todo)
    if isinstance(exc, pickle.UnpicklingError):
        name = refused_global(exc)
        named = f" (it names {name})" if name else f" ({torch_detail(exc)})"
        return ValueError(
            f"refusing to load {path}: it holds objects other than tensors, plain containers "
            f"and the few allowed types{named}, so it is not loaded (weights-only loading, "
            "nothing from the file is run). Use the file from the model's original source."
        )
    return unreadable(path, what, torch_detail(exc), todo)
