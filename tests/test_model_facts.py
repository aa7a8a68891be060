"""Every per-model fact lives in the registry (virnuc_core/registry.py) and the model files
(virnuc_core/engine/models/): adding a model touches those, the schema and nothing else.

The scan: no module of the library outside those, no step script and no workflow file (rules,
Snakefile, report templates) names a model in a string: its config key (``dnabert``, ``esm``,
as a word, any case: also ``DNABERT-S``, ``ESM-2``) or its published name. Docstrings and
comments may talk about the models; code that tests or spells a name may not (the registry
says what differs, e.g. ``family(model).colour``, ``FAMILIES``'s order).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from virnuc_core.registry import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = ("virnuc_core/registry.py", "virnuc_core/engine/models/")
# Known, owned elsewhere (issue 36): remove an entry once its file names no model.
PENDING: dict[str, str] = {}  # path -> why it may still name a model (none today)
NAMES = sorted({n for f in FAMILIES.values() for n in (f.name, f.published)}, key=len)
WORD = re.compile(r"(?<![\w])(" + "|".join(map(re.escape, NAMES)) + r")(?![\w])", re.IGNORECASE)
QUOTED = re.compile(r'"([^"\n]*)"|\'([^\'\n]*)\'')
JINJA = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def python_hits(source: str) -> list[tuple[int, str]]:
    """(line, string) of every string constant (f-strings' parts too; not docstrings) that
    names a model."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docs
        and WORD.search(node.value)
    ]


def workflow_hits(text: str, jinja: bool = False) -> list[tuple[int, str]]:
    """(line, string) of every quoted string naming a model: in a rules file outside its
    comments; in a report template inside its Jinja expressions."""
    hits = []
    for block in JINJA.finditer(text) if jinja else [re.match(r".*", text, re.DOTALL)]:
        start = text.count("\n", 0, block.start()) + 1
        for n, line in enumerate(block.group().splitlines(), start):
            if line.lstrip().startswith("#"):
                continue
            for m in QUOTED.finditer(line):
                if WORD.search(m.group(1) or m.group(2) or ""):
                    hits.append((n, m.group()))
    return hits


def _scanned() -> list[Path]:
    library = [
        p
        for p in (ROOT / "virnuc_core").rglob("*.py")
        if not p.relative_to(ROOT).as_posix().startswith(ALLOWED)
    ]
    workflow = [ROOT / "Snakefile", *(ROOT / "workflow").rglob("*.smk")]
    return library + sorted((ROOT / "scripts").rglob("*.py")) + workflow


def test_no_module_outside_the_registry_names_a_model():
    found = []
    for path in _scanned():
        rel = path.relative_to(ROOT).as_posix()
        if rel in PENDING:
            continue
        text = path.read_text()
        hits = python_hits(text) if path.suffix == ".py" else workflow_hits(text)
        found += [f"{rel}:{line}: {value!r}" for line, value in hits]
    for path in sorted((ROOT / "workflow" / "report").glob("*.rst")):
        rel = path.relative_to(ROOT).as_posix()
        found += [f"{rel}:{n}: {v}" for n, v in workflow_hits(path.read_text(), jinja=True)]
    assert not found, (
        "per-model facts outside the registry (virnuc_core/registry.py, engine/models/): "
        "make them a field of registry.Family (or a function of the model's loader it points "
        "to) and read it from there:\n" + "\n".join(found)
    )


def test_the_scan_sees_a_model_named_in_code():
    """The scan itself: what it must catch and what it must let pass (hand-written cases)."""
    assert [v for _, v in python_hits('x = "#4C72B0" if m == "dnabert" else "#55A868"\n')] == [
        "dnabert"
    ]
    assert python_hits('flag = f" --esm {spec}"\n') and python_hits('t = "ESM-2 and DNABERT-S"\n')
    assert python_hits('spec = "zhihan1996/DNABERT-S"\n')
    assert not python_hits('"""Docstring: DNABERT-S and ESM-2."""\nx = "esmeralda"  # esm\n')
    assert not python_hits('x = "results/{sample}/embeddings/{model}/shard_{i}.h5"\n')
    assert workflow_hits('rule a:\n    input: "results/{s}/esm.h5"\n') == [
        (2, '"results/{s}/esm.h5"')
    ]
    assert not workflow_hits('# "esm" in a comment\nrule a:\n    input: "x"\n')
    rst = 'Text about ESM-2.\n{% if "tiny" in (models.get("dnabert"), x) %}\n'
    assert workflow_hits(rst, jinja=True) == [(2, '"dnabert"')]
