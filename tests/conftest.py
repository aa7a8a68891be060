"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The workflow's step scripts import the installed virnuc_core; the Snakemake runs the tests
# start (and their jobs) import this checkout's, whichever copy is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "chunk_translate"


@pytest.fixture
def golden_dir() -> Path:
    """Golden chunk/translate files made by the original VirNucPro (../shared beside the repo)."""
    if not (GOLDEN / "input.fa").is_file():
        pytest.fail(
            f"golden files not found at {GOLDEN}: the tests need the project's shared/ folder "
            "checked out beside the repository (../shared/golden/chunk_translate)"
        )
    return GOLDEN
