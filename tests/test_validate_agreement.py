"""The validation summary's classifier agreement (jobs/validate_job.summarize): the verdicts
from the fast embeddings against those from the reference path, for the sampled frames, with
the models' columns side by side in the registry's order."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from virnuc_core.jobs.validate_job import summarize
from virnuc_core.registry import FAMILIES

WIDTHS = {"dnabert": 3, "esm": 5}  # small stand-ins for 768 and 2560
ROWS = 40


def _write(tmp_path, refs_from=None):
    """features.h5 (random rows), each model's reference file of the sampled records and its
    summary; ``refs_from``: per model, (records, rows) to write instead of the fast rows."""
    rng = np.random.default_rng(5)
    fast = {m: rng.normal(size=(ROWS, WIDTHS[m])).astype(np.float32) for m in FAMILIES}
    records = np.array([1, 4, 7, 8, 20, 33, 39])
    with h5py.File(tmp_path / "features.h5", "w") as f:
        f["ids"] = np.arange(ROWS)
        for m, rows in fast.items():
            f[m] = rows
    refs, summaries = [], []
    for m in FAMILIES:
        rec, rows = (refs_from or {}).get(m, (records, fast[m][records]))
        path = tmp_path / f"{m}.reference.h5"
        with h5py.File(path, "w") as f:
            f["records"], f["embeddings"] = rec, rows
            f.attrs["model"] = m
        refs.append(str(path))
        summaries.append(str(tmp_path / f"{m}.json"))
        (tmp_path / f"{m}.json").write_text(json.dumps({"model": m, "passed": True}))
    return fast, records, refs, summaries


def test_matching_references_agree_on_every_verdict(tmp_path):
    _, records, refs, summaries = _write(tmp_path)
    out = tmp_path / "summary.json"
    result = summarize(str(tmp_path / "features.h5"), refs, summaries, str(out), "tiny")
    assert result["classifier_agreement"] == {"n": len(records), "agreement": 1.0}
    assert json.loads(out.read_text()) == result
    assert [s["model"] for s in result["models"]] == list(FAMILIES)


def test_references_of_other_frames_are_refused(tmp_path):
    fast, records, _, _ = _write(tmp_path)
    other = records - 1  # one model's sample drawn differently (another seed, say)
    refs_from = {"esm": (other, fast["esm"][other])}
    _, _, refs, summaries = _write(tmp_path, refs_from)
    with pytest.raises(ValueError, match="validation samples differ; rerun validate_embeddings"):
        summarize(str(tmp_path / "features.h5"), refs, summaries, str(tmp_path / "s.json"), "tiny")
    assert not (tmp_path / "s.json").exists()
