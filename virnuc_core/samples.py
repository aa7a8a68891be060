"""The samples of a run: name -> the read files processed as that sample, in order.

The config's ``samples`` is either a mapping (name -> one path, or a list of paths) or the path of
a tab-separated sheet with a header ``sample`` and ``reads`` (or ``fasta``, the older name) and
one row per file; rows of the same sample are its files in row order. Sample names are folder
names under ``results/``, so they are restricted to letters, digits, ``_``, ``.`` and ``-`` and
may not start with ``.`` (``..`` would write into the run folder itself). A file listed twice for
one sample is refused, and so is a config file that gives one key (one sample) twice: YAML would
keep only the last, silently.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
from collections.abc import Hashable, Mapping
from pathlib import Path

import yaml

NAME = re.compile(r"[A-Za-z0-9_.-]+")  # matched whole (fullmatch)
FILE_COLUMNS = ("reads", "fasta")
# What a path that is not a regular file is, by its stat mode.
KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


class SampleError(ValueError):
    """The samples cannot be used; the message names the sheet, the line and the problem."""


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SampleError(
            f"{where}: sample name {name!r} may hold only letters, digits, '_', '.' and '-'"
        )
    if name.startswith("."):
        raise SampleError(
            f"{where}: sample name {name!r} may not start with '.': it is the sample's folder "
            "under results/ ('..' is the run folder itself, '.' is results/); rename the sample"
        )
    return name


def _same_file_key(path: str) -> str:
    """One spelling per file: 'reads/a.fq', './reads/a.fq' and a link to it are the same file."""
    return os.path.realpath(path)


def _from_sheet(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise SampleError(f"sample sheet {str(path)!r} does not exist")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        column = next((c for c in FILE_COLUMNS if c in (reader.fieldnames or [])), None)
        if "sample" not in (reader.fieldnames or []) or column is None:
            raise SampleError(
                f"sample sheet {str(path)!r}: line 1 must name the columns 'sample' and 'reads' "
                f"(tab-separated), found {reader.fieldnames}"
            )
        table: dict[str, list[str]] = {}
        first_line: dict[tuple[str, str], int] = {}  # (sample, file) -> the line listing it
        for row in reader:
            line = reader.line_num  # the file's line (blank lines are skipped, but counted)
            where = f"sample sheet {str(path)!r}, line {line}"
            name = _check_name(row["sample"], where)
            if not row[column]:
                raise SampleError(f"{where}: no file for {name!r}")
            file = str(Path(row[column]).expanduser())  # as before: Path's spelling
            seen = first_line.setdefault((name, _same_file_key(file)), line)
            if seen != line:
                raise SampleError(
                    f"{where}: file {file!r} is listed twice for sample {name!r} (also on line "
                    f"{seen}); list each file of a sample once"
                )
            table.setdefault(name, []).append(file)
    return table


def _from_mapping(samples: Mapping) -> dict[str, list[str]]:
    table = {}
    for name, files in samples.items():
        name = _check_name(name, "config 'samples'")
        files = [files] if isinstance(files, str) else list(files)
        if not files or not all(isinstance(f, str) and f for f in files):
            raise SampleError(f"config 'samples': sample {name!r} lists no file")
        files = [os.path.expanduser(f) for f in files]
        seen = set()
        for file in files:
            if _same_file_key(file) in seen:
                raise SampleError(
                    f"config 'samples': file {file!r} is listed twice for sample {name!r}; "
                    "list each file of a sample once"
                )
            seen.add(_same_file_key(file))
        table[name] = files
    return table


def read_samples(samples: Mapping[str, str | list[str]] | str) -> dict[str, list[str]]:
    """Sample name -> its read files (see the module docstring); refuses an empty table."""
    if isinstance(samples, Mapping):
        table = _from_mapping(samples)
    else:
        table = _from_sheet(Path(samples).expanduser())
    if not table:
        raise SampleError("config 'samples' lists no samples")
    return table


def _file_problem(path: str) -> str | None:
    """Why ``path`` cannot be read as a file of reads (None if it can)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "is a broken symbolic link" if os.path.islink(path) else "does not exist"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if stat.S_ISREG(mode):
        # root reads any file: a test open, not os.access, tells (it opens nothing of a pipe)
        try:
            open(path, "rb").close()
        except OSError as err:
            return f"cannot be read ({err.strerror})"
        return None
    kind = next((kind for test, kind in KINDS if test(mode)), "not a regular file")
    return f"is {kind}, not a file of reads"


def missing_files(table: Mapping[str, list[str]]) -> list[str]:
    """A message for every listed file that is not a readable regular file, saying what it is."""
    return [
        f"sample {name!r}: input file {f!r} {problem}"
        for name, files in table.items()
        for f in files
        if (problem := _file_problem(f)) is not None
    ]


def _duplicate_keys(loader: yaml.SafeLoader, node: yaml.Node, path: tuple, seen_nodes: set):
    """(key, path, line, first line) of the first key given twice in one mapping under ``node``."""
    if id(node) in seen_nodes:  # an alias of a node already walked
        return None
    seen_nodes.add(id(node))
    children = []
    if isinstance(node, yaml.MappingNode):
        lines: dict = {}  # key -> the line it is first on
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in lines:
                return key, path, line, lines[key]
            if isinstance(key, Hashable):
                lines[key] = line
            children.append((value_node, (*path, key)))
    elif isinstance(node, yaml.SequenceNode):
        children = [(item, path) for item in node.value]
    for child, child_path in children:
        found = _duplicate_keys(loader, child, child_path, seen_nodes)
        if found:
            return found
    return None


def check_config_file(path: str | os.PathLike) -> None:
    """Refuses a YAML (or JSON) config file that gives one key twice in a mapping, such as one
    sample twice: the loader Snakemake uses keeps only the last, silently."""
    path = os.path.abspath(path)  # a relative one is relative to the run folder
    text = Path(path).read_text(encoding="utf-8")
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        found = root is not None and _duplicate_keys(loader, root, (), set())
    except yaml.YAMLError:
        found = _json_duplicate(text)  # JSON that YAML cannot read (tabs), or neither
    finally:
        loader.dispose()
    if not found:
        return
    key, where, line, first = found
    at = f"config file {path!r}, line {line}" if line else f"config file {path!r}"
    also = f" (also on line {first})" if line else ""
    if where == ("samples",):
        raise SampleError(
            f"{at}: sample {key!r} is named twice{also}; only the last would be used. List a "
            f"sample's files under one name, e.g. {key}: [R1.fq.gz, R2.fq.gz]"
        )
    inside = f" in {'.'.join(map(str, where))}" if where else ""
    raise SampleError(
        f"{at}: key {key!r} is given twice{inside}{also}; only the last would be used. "
        "Keep one of them."
    )


def _json_duplicate(text: str):
    """(key, path, 0, 0) of a key given twice in one JSON object; None for none (or not JSON)."""
    found = []

    def pairs(items):
        keys = [k for k, _ in items]
        found.extend(k for i, k in enumerate(keys) if k in keys[:i])
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except ValueError:
        return None
    return (found[0], (), 0, 0) if found else None
