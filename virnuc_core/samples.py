"""The samples of a run: name -> the read files processed as that sample, in order.

The config's ``samples`` is either a mapping (name -> one path, or a list of paths) or the path of
a tab-separated sheet with a header ``sample`` and ``reads`` (or ``fasta``, the older name) and
one row per file; rows of the same sample are its files in row order. Sample names are used in
file names, so they are restricted to letters, digits, ``_``, ``.`` and ``-``.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
FILE_COLUMNS = ("reads", "fasta")


class SampleError(ValueError):
    """The samples cannot be used; the message names the sheet, the line and the problem."""


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise SampleError(
            f"{where}: sample name {name!r} may hold only letters, digits, '_', '.' and '-'"
        )
    return name


def _from_sheet(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise SampleError(f"sample sheet {path} does not exist")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        column = next((c for c in FILE_COLUMNS if c in (reader.fieldnames or [])), None)
        if "sample" not in (reader.fieldnames or []) or column is None:
            raise SampleError(
                f"sample sheet {path}: line 1 must name the columns 'sample' and 'reads' "
                f"(tab-separated), found {reader.fieldnames}"
            )
        table: dict[str, list[str]] = {}
        for line, row in enumerate(reader, 2):
            name = _check_name(row["sample"], f"sample sheet {path}, line {line}")
            if not row[column]:
                raise SampleError(f"sample sheet {path}, line {line}: no file for {name!r}")
            file = Path(row[column]).expanduser()
            table.setdefault(name, []).append(str(file if file.is_absolute() else file))
    return table


def read_samples(samples: Mapping[str, str | list[str]] | str) -> dict[str, list[str]]:
    """Sample name -> its read files (see the module docstring); refuses an empty table."""
    if isinstance(samples, Mapping):
        table = {}
        for name, files in samples.items():
            files = [files] if isinstance(files, str) else list(files)
            if not files or not all(isinstance(f, str) and f for f in files):
                raise SampleError(f"config 'samples': sample {name!r} lists no file")
            table[_check_name(name, "config 'samples'")] = [os.path.expanduser(f) for f in files]
    else:
        table = _from_sheet(Path(samples).expanduser())
    if not table:
        raise SampleError("config 'samples' lists no samples")
    return table


def missing_files(table: Mapping[str, list[str]]) -> list[tuple[str, str]]:
    """(sample, path) of every listed file that does not exist."""
    return [(name, f) for name, files in table.items() for f in files if not os.path.isfile(f)]
