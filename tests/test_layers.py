"""The library's layers: imports point downward only, and no module imports itself in a circle.

Layers, top to bottom (docs/development.md): the installed commands, report, jobs, registry,
settings, then engine and data side by side (neither imports the other), util (and the measured
constants, package data) at the bottom. Imports inside functions
count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "virnuc_core"
RANK = {
    "util": 0, "data": 1, "engine": 1, "measured": 0, "settings": 2, "registry": 3, "jobs": 4,
    "report": 5, "commands": 6,
}  # fmt: skip


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The virnuc_core modules ``path`` imports (``from virnuc_core.x import y`` names x.y when
    x.y is a module, else x)."""
    out = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("virnuc_core")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if not base.startswith("virnuc_core"):
                continue
            for alias in node.names:
                name = f"{base}.{alias.name}"
                exists = (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").is_file()
                out.add(
                    name if exists or (PACKAGE.parent / name.replace(".", "/")).is_dir() else base
                )
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {d for d in _imports(p) if d in modules and d != m} for m, p in modules.items()}


def layer(module: str) -> str:
    """The layer a module belongs to: its sub-package, or its own name at the top level."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "virnuc_core"


def test_every_module_has_a_layer():
    unknown = sorted(m for m in _graph() if layer(m) not in RANK and m != "virnuc_core")
    assert not unknown, f"modules outside the layers {sorted(RANK)}: {unknown}"


def test_imports_point_downward():
    upward = []
    for module, deps in _graph().items():
        for dep in deps:
            a, b = layer(module), layer(dep)
            if a == b or "virnuc_core" in (a, b):
                continue
            if RANK[b] > RANK[a] or (RANK[a] == RANK[b] == 1):
                upward.append(f"{module} -> {dep}")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_no_import_circles():
    graph = _graph()
    circles = sorted(
        f"{module} -> {dep}" for module, deps in graph.items() for dep in deps
        if module in _reachable(graph, dep)
    )  # fmt: skip
    assert not circles, "imports that close a circle:\n" + "\n".join(circles)


@pytest.mark.parametrize("bad", ["jobs", "registry"])
def test_the_check_sees_an_upward_import(tmp_path, bad, monkeypatch):
    """The layering check itself: a data module importing a higher layer is reported."""
    fake = tmp_path / "virnuc_core"
    (fake / "data").mkdir(parents=True)
    (fake / "jobs").mkdir()
    for f in ("__init__.py", "data/__init__.py", "jobs/__init__.py", "registry.py", "jobs/x.py"):
        (fake / f).write_text("")
    target = "virnuc_core.jobs.x" if bad == "jobs" else "virnuc_core.registry"
    (fake / "data" / "y.py").write_text(f"import {target}\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="data.y"):
        test_imports_point_downward()
