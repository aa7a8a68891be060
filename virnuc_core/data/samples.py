"""The samples of a run: name -> the read files processed as that sample, in order, and how
they pair.

The config's ``samples`` is either a mapping or the path of a tab-separated sample sheet.

* Mapping: name -> one path or a list of paths (single-end); name -> ``{r1: file, r2: file}``
  (paired-end; ``r1`` and ``r2`` may be lists of equal length: pairs of files, in order); name
  -> ``{interleaved: file}`` (or a list: FASTQ whose records alternate mate 1, mate 2).
* Sheet: a header ``sample`` and ``reads`` (or ``fasta``, the older name), one row per file
  (single-end); or ``sample``, ``fastq_1``, ``fastq_2`` (nf-core's convention), one row per pair
  of files. An optional column ``interleaved`` (true/false) marks a row's one file as
  interleaved. Rows of the same sample are its files in row order, all of one kind.

Interleaving is never guessed from the content: only these settings say a file is interleaved.
Sample names are folder names under ``results/``, so they are restricted to letters, digits,
``_``, ``.`` and ``-`` and may not start with ``.`` (``..`` would write into the run folder
itself). A file listed twice for one sample is refused, and so is a config file that gives one
key (one sample) twice: YAML would keep only the last, silently.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

NAME = re.compile(r"[A-Za-z0-9_.-]+")  # matched whole (fullmatch)
FILE_COLUMNS = ("reads", "fasta")
PAIR_COLUMNS = ("fastq_1", "fastq_2")
# How a sample's files hold its reads.
SINGLE, PAIRS, INTERLEAVED = "single", "pairs", "interleaved"
LAYOUT_WORDS = {SINGLE: "single-end", PAIRS: "paired (fastq_1/fastq_2)", INTERLEAVED: "interleaved"}
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0", "")
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


@dataclass(frozen=True)
class Sample:
    """One sample's read files, in read order, and their ``layout``: :data:`SINGLE` (each
    file its reads), :data:`PAIRS` (``files`` is mate-1 file, mate-2 file, mate-1 file, ...)
    or :data:`INTERLEAVED` (each file's records alternate mate 1, mate 2)."""

    layout: str
    files: tuple[str, ...]

    @property
    def paired(self) -> bool:
        """Whether the sample's reads are mate pairs."""
        return self.layout != SINGLE

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (mate-1 file, mate-2 file) pairs of a :data:`PAIRS` sample, in order."""
        return list(zip(self.files[0::2], self.files[1::2], strict=True))


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


def _sheet_columns(path: Path, names: list[str]) -> tuple[str, str | None, str | None]:
    """The sheet's columns: (first file, second file or None, interleaved or None)."""
    files = [c for c in (*FILE_COLUMNS, PAIR_COLUMNS[0]) if c in names]
    if "sample" not in names or not files:
        raise SampleError(
            f"sample sheet {str(path)!r}: line 1 must name the columns 'sample' and 'reads' "
            "(single-end) or 'sample', 'fastq_1' and 'fastq_2' (paired-end), tab-separated; "
            f"found {names}"
        )
    if PAIR_COLUMNS[0] in files and len(files) > 1:
        raise SampleError(
            f"sample sheet {str(path)!r}: line 1 names both {files[0]!r} and 'fastq_1': name "
            "one file column ('reads' for single-end, 'fastq_1' and 'fastq_2' for pairs)"
        )
    second = PAIR_COLUMNS[1] if PAIR_COLUMNS[1] in names else None
    if second and files[0] != PAIR_COLUMNS[0]:
        raise SampleError(
            f"sample sheet {str(path)!r}: line 1 names 'fastq_2' with {files[0]!r}: a paired "
            "sheet names 'fastq_1' and 'fastq_2'"
        )
    return files[0], second, "interleaved" if "interleaved" in names else None


def _row_layout(row: dict, second: str | None, flag: str | None, where: str) -> str:
    """The layout one sheet row gives its files."""
    value = (row.get(flag) or "").strip().lower() if flag else ""
    if value not in _TRUE + _FALSE:
        raise SampleError(
            f"{where}: interleaved is {row.get(flag)!r}; write true or false (or leave it empty)"
        )
    if second and row.get(second) and value in _TRUE:
        raise SampleError(
            f"{where}: a row with a fastq_2 file is not interleaved: give the pair's two files, "
            "or one interleaved file with fastq_2 empty"
        )
    if second and row.get(second):
        return PAIRS
    return INTERLEAVED if value in _TRUE else SINGLE


def _from_sheet(path: Path) -> dict[str, Sample]:
    if not path.is_file():
        raise SampleError(f"sample sheet {str(path)!r} does not exist")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        column, second, flag = _sheet_columns(path, list(reader.fieldnames or []))
        table: dict[str, tuple[str, list[str], int]] = {}  # name -> layout, files, first line
        first_line: dict[tuple[str, str], int] = {}  # (sample, file) -> the line listing it
        for row in reader:
            line = reader.line_num  # the file's line (blank lines are skipped, but counted)
            where = f"sample sheet {str(path)!r}, line {line}"
            name = _check_name(row["sample"], where)
            if not row[column]:
                raise SampleError(f"{where}: no file for {name!r} in column {column!r}")
            layout = _row_layout(row, second, flag, where)
            files = [row[column]] + ([row[second]] if layout == PAIRS else [])
            files = [str(Path(f).expanduser()) for f in files]  # as before: Path's spelling
            kind, listed, since = table.setdefault(name, (layout, [], line))
            if kind != layout:
                raise SampleError(
                    f"{where}: this row of sample {name!r} is {LAYOUT_WORDS[layout]}, its row "
                    f"on line {since} {LAYOUT_WORDS[kind]}: a sample's rows are all of one "
                    "kind; give the others another sample name"
                )
            in_row: set[str] = set()
            for file in files:
                key = _same_file_key(file)
                seen = first_line.setdefault((name, key), line)
                if seen != line or key in in_row:
                    raise SampleError(
                        f"{where}: file {file!r} is listed twice for sample {name!r} (also on "
                        f"line {seen}); list each file of a sample once"
                    )
                in_row.add(key)
            listed += files
    return {name: Sample(layout, tuple(files)) for name, (layout, files, _) in table.items()}


def _file_list(files: object, where: str) -> list[str]:
    """One file or a list of files of a mapping entry, each a non-empty string."""
    files = [files] if isinstance(files, str) else files
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
        raise SampleError(f"{where} lists no file")
    return [os.path.expanduser(f) for f in files]


def _mapping_sample(name: str, value: object) -> Sample:
    """One entry of the config's mapping: a file, a list, or {r1, r2} / {interleaved}."""
    where = f"config 'samples': sample {name!r}"
    if not isinstance(value, Mapping):
        return Sample(SINGLE, tuple(_file_list(value, where)))
    if set(value) == {"interleaved"}:
        return Sample(
            INTERLEAVED, tuple(_file_list(value["interleaved"], f"{where}, key 'interleaved'"))
        )
    if set(value) != {"r1", "r2"}:
        raise SampleError(
            f"{where}: keys {sorted(map(str, value))}: give r1 and r2 (paired-end files, e.g. "
            f"{name}: {{r1: R1.fastq.gz, r2: R2.fastq.gz}}) or interleaved (one file whose "
            "records alternate mate 1, mate 2)"
        )
    r1 = _file_list(value["r1"], f"{where}, key 'r1'")
    r2 = _file_list(value["r2"], f"{where}, key 'r2'")
    if len(r1) != len(r2):
        raise SampleError(
            f"{where}: r1 lists {len(r1)} file(s), r2 {len(r2)}: list the files of each pair "
            "at the same place in r1 and r2"
        )
    return Sample(PAIRS, tuple(f for pair in zip(r1, r2, strict=True) for f in pair))


def _from_mapping(samples: Mapping) -> dict[str, Sample]:
    table = {}
    for name, value in samples.items():
        name = _check_name(name, "config 'samples'")
        sample = _mapping_sample(name, value)
        seen = set()
        for file in sample.files:
            if _same_file_key(file) in seen:
                raise SampleError(
                    f"config 'samples': file {file!r} is listed twice for sample {name!r}; "
                    "list each file of a sample once"
                )
            seen.add(_same_file_key(file))
        table[name] = sample
    return table


def read_sample_table(samples: Mapping | str) -> dict[str, Sample]:
    """Sample name -> its :class:`Sample` (see the module docstring); refuses an empty table."""
    if isinstance(samples, Mapping):
        table = _from_mapping(samples)
    else:
        table = _from_sheet(Path(samples).expanduser())
    if not table:
        raise SampleError("config 'samples' lists no samples")
    return table


def read_samples(samples: Mapping | str) -> dict[str, list[str]]:
    """Sample name -> its read files, in order (pairs: mate-1 file, mate-2 file, ...)."""
    return {name: list(sample.files) for name, sample in read_sample_table(samples).items()}


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
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: walk what it merges
                children.append((value_node, path))
                continue
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
