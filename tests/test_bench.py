"""The benches: every one imports and parses its options; the harness runs what a job runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_"))

HELP_ALL = """
import contextlib, importlib, io, sys
for name in sys.argv[1:]:
    module = importlib.import_module("bench." + name)
    sys.argv = [name, "--help"]
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        module.main()
    assert "usage" in out.getvalue(), name
"""


def test_every_bench_imports_and_answers_help():
    """Run as the README says (``python -m bench.NAME`` from the root), without sys.path edits."""
    assert "scale" in BENCHES and "dnabert_throughput" in BENCHES
    proc = subprocess.run([sys.executable, "-c", HELP_ALL, *BENCHES], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in (ROOT / "bench").glob("*.py"):
        assert "sys.path" not in path.read_text(), path


def test_job_settings_take_config_keys():
    from bench._harness import job_settings

    s = job_settings("dnabert", "tiny", {"compile": True, "attention_backend": "padded"})
    assert (s.model, s.model_spec, s.compile, s.attention_backend) == (
        "dnabert", "tiny", True, "padded",
    )  # fmt: skip
    # the schema's per-model defaults reach the bench
    assert job_settings("dnabert", "tiny").compile and not job_settings("esm", "tiny").compile


@pytest.mark.parametrize(
    "changes",
    [{}, {"attention_backend": "padded", "precision": "fp16"}],
)  # fmt: skip
def test_esm_encoder_is_the_loaders(changes):
    """The bench's in-memory ESM-2 encoder describes itself as the job's loaded one does."""
    from bench._harness import esm_encoder, job_settings
    from virnuc_core.engine.models.esm2_load import build_fair_model
    from virnuc_core.registry import load_encoder

    settings = job_settings("esm", "tiny", changes)
    fair, _ = build_fair_model("tiny")
    described = load_encoder(settings, "cpu").describe()
    assert esm_encoder(fair, settings, "cpu").describe() == described
    # the one engine, recorded with the embeddings: fused kernels, GELU in fc1's epilogue
    assert described["fused_kernels"] == 1 and "cuBLASLt" in described["kernels"]


def test_run_batches_is_the_job_loop():
    """Rows by record from the job's packer and loop match the reference path."""
    from bench._harness import job_batches, job_settings, run_batches
    from virnuc_core.engine.models.dnabert_tiny import random_dna
    from virnuc_core.jobs.validate import cosine_rows
    from virnuc_core.registry import load_encoder

    enc = load_encoder(job_settings("dnabert", "tiny"), "cpu")
    seqs = random_dna(np.random.default_rng(0), 40, 50, 300)
    timed = run_batches(enc.embed_packed, job_batches(enc.tokenize(seqs), 512), "cpu", keep=True)
    assert sorted(timed.records.tolist()) == list(range(40)) and timed.batches > 1
    assert cosine_rows(timed.embeddings, enc.reference_embed(seqs)).min() > 0.9999


def test_levers_baselines_flag_alone_means_all():
    """A bare --baselines runs them, not skips them; ``--rows job --baselines none`` is the
    ESM-2 job's bare rate alone."""
    from bench.esm2_levers import BASELINES, parse_args

    bare = parse_args(["--rows", "job", "--baselines", "none"])
    assert (bare.rows, bare.baselines) == (["job"], [])

    assert parse_args(["--baselines"]).baselines == list(BASELINES)
    assert parse_args([]).baselines == list(BASELINES)
    assert parse_args(["--baselines", "none"]).baselines == []
    assert parse_args(["--baselines", "fair16"]).baselines == ["fair16"]


def test_workflow_compare_finds_a_changed_row_and_verdict(tmp_path):
    """bench.workflow_gpu --compare: a run against a saved one, one embedding row and one
    verdict changed."""
    import h5py
    import numpy as np

    from bench.workflow_gpu import TABLES, compare_outputs, save_outputs

    def fake_run(folder, flip: bool):
        sample = folder / "results/gpu"
        sample.mkdir(parents=True)
        rng = np.random.default_rng(0)
        with h5py.File(sample / "features.h5", "w") as f:
            for model, width in (("dnabert", 8), ("esm", 12)):
                rows = rng.standard_normal((30, width)).astype(np.float32)
                rows[7] += 1e-3 if flip and model == "esm" else 0
                f[model] = rows
        lines = [f"r{i}\t{'virus' if i % 3 else 'others'}\t0.{i:02d}\t0.5\n" for i in range(30)]
        if flip:
            lines[4] = "r4\tothers\t0.06\t0.5\n"
        for name in TABLES:
            (sample / name).write_text("Sequence_ID\tPrediction\tscore1\tscore2\n" + "".join(lines))
        return folder

    save_outputs(fake_run(tmp_path / "a", False), tmp_path / "saved")
    same = compare_outputs(fake_run(tmp_path / "b", False), tmp_path / "saved")
    assert same["calls_agree"] == same["calls"] == 30 and same["max_score_diff"] == 0
    assert same["esm"]["rows_identical"] == 30 and all(same["tables_identical"].values())
    other = compare_outputs(fake_run(tmp_path / "c", True), tmp_path / "saved")
    assert other["calls_agree"] == 29 and abs(other["max_score_diff"] - 0.02) < 1e-12
    assert other["esm"]["rows_identical"] == 29 and other["dnabert"]["rows_identical"] == 30
    assert other["esm"]["sampled_max_abs_diff"] > 5e-4
    assert not other["tables_identical"]["prediction_results.tsv"]


def test_load_profile_times_each_step_of_the_job_before_its_loop(tmp_path):
    import json

    faa = tmp_path / "p.faa"
    rng = np.random.default_rng(0)
    faa.write_text("".join(f">p{i}\n{''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY'), 40 + i))}\n"
                           for i in range(30)))  # fmt: skip
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, "-m", "bench.load_profile", "--config",
                           str(ROOT / "config/demo.yaml"), "--proteins", str(faa), "--reference",
                           "5", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads(out.read_text())["steps"]
    assert list(steps) == ["load_encoder", "reference_rows", "release_reference", "first_batch",
                           "second_batch"]  # fmt: skip
    for step in steps.values():
        assert step["seconds"] > 0 and step["top_cumulative"], step
    names = [row["function"] for row in steps["load_encoder"]["top_cumulative"]]
    assert any(name.endswith(":load_encoder") for name in names), names
