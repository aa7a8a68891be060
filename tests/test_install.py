"""An ordinary (non-editable) install: the library plans runs from its package data alone
(throughputs, memory per rule, the config schema's defaults), and the fetch command is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PLAN = """
import json
from virnuc_core import settings
from virnuc_core.jobs import resources, run_plan
s = settings.WorkflowSettings.from_config({"samples": {"a": "a.fa"}, "chunk_length": 300})
print(json.dumps({
    "module": settings.__file__,
    "models": list(settings.MODELS),
    "esm": s.models["esm"],
    "gpus": sorted({e["gpu"] for e in run_plan.measured()}),
    "predict_mb": resources.mem_mb("predict", 10**6),
    "rules": sorted(resources.MEASURED),
}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    source = build / "source"  # what the build reads, copied: an in-tree build/ goes stale
    for part in ("virnuc_core", "workflow/schemas"):
        shutil.copytree(REPO / part, source / part, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, env={**os.environ, "TMPDIR": str(build)},
    )  # fmt: skip
    return target


def _run(target: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def test_an_installed_copy_plans_from_its_package_data(installed, tmp_path):
    done = _run(installed, sys.executable, "-c", PLAN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert Path(got["module"]).is_relative_to(installed)  # not this checkout's copy
    assert got["models"] == ["dnabert", "esm"] and got["esm"] == "esm2_t36_3B_UR50D"  # defaults
    assert "NVIDIA H100 80GB HBM3" in got["gpus"]
    assert got["predict_mb"] == 1065  # ceil(1.5 * (710 + 0)): memory.json's predict figure
    assert "merge_shards" in got["rules"] and "embed_shard" in got["rules"]


def test_the_fetch_command_is_installed(installed, tmp_path):
    done = _run(installed, str(installed / "bin" / "virnuc-fetch-models"), "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--dnabert-revision" in done.stdout and "models.lock.json" in done.stdout
