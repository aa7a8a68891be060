"""The run plan: its measured throughputs come from the files they name, and its sums."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virnuc_core.jobs.run_plan import DISK_MARGIN, cpu_note, measured, measured_cpu, run_plan

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("entry", measured(), ids=lambda e: f"{e['gpu']}:{e['model']}")
def test_every_throughput_is_the_figure_in_its_source_file(entry):
    doc = json.loads((REPO / entry["source"]).read_text())
    select = dict(entry["select"])
    rows = [r for r in doc[select.pop("list")] if all(r.get(k) == v for k, v in select.items())]
    assert len(rows) == 1, f"{entry['source']}: {len(rows)} rows match {entry['select']}"
    assert rows[0]["tokens_per_s"] == entry["tokens_per_s"]
    assert doc["machine"]["gpu"] == entry["gpu"]


@pytest.mark.parametrize("entry", measured_cpu(), ids=lambda e: f"{e['cpu']}:{e['model']}")
def test_every_cpu_throughput_is_the_figure_in_its_source_file(entry):
    doc = json.loads((REPO / entry["source"]).read_text())
    select = dict(entry["select"])
    rows = [r for r in doc[select.pop("list")] if all(r.get(k) == v for k, v in select.items())]
    assert len(rows) == 1 and rows[0]["tokens_per_s"] == entry["tokens_per_s"]
    assert doc["machine"]["cpu"] == entry["cpu"] and doc["machine"]["threads"] == entry["threads"]


def shard_doc(frames: int, tokens: dict[str, list[int]]) -> dict:
    models = {m: {"tokens": t, "distinct": [frames // len(t)] * len(t),
                  "tokens_estimated": m == "dnabert"} for m, t in tokens.items()}  # fmt: skip
    return {"frames": frames, "shards": 2, "models": models}


def test_gpu_seconds_and_disk_from_the_table():
    table = [
        {"gpu": "G1", "model": "esm", "tokens_per_s": 1000.0, "source": "a.json"},
        {"gpu": "G2", "model": "esm", "tokens_per_s": 4000.0, "source": "b.json"},
        {"gpu": "G1", "model": "dnabert", "tokens_per_s": 50000.0, "source": "c.json"},
    ]
    models = {"dnabert": "zhihan1996/DNABERT-S", "esm": "esm2_t36_3B_UR50D"}
    doc = shard_doc(1000, {"dnabert": [60000, 40000], "esm": [3000, 5000]})
    plan = run_plan("s", doc, models, input_bytes=12345, table=table)
    esm = plan["models"]["esm"]
    assert esm["tokens"] == 8000 and esm["width"] == 2560 and esm["architecture"] == "ESM-2 3B"
    assert [(t["gpu"], t["seconds"]) for t in esm["expected_gpu_seconds"]] == [
        ("G1", 8.0),
        ("G2", 2.0),
    ]
    dna = plan["models"]["dnabert"]
    assert [(t["gpu"], t["seconds"], t["source"]) for t in dna["expected_gpu_seconds"]] == [
        ("G1", 2.0, "c.json")
    ]
    assert dna["tokens_estimated"] is True and esm["tokens_estimated"] is False
    embeddings = 1000 * 4 * (768 + 2560)
    assert plan["disk"]["embeddings_bytes"] == embeddings
    assert plan["disk"]["high_water_bytes"] == int(embeddings * DISK_MARGIN + 12345)
    assert set(plan["job_memory_mb"]) >= {"embed_shard", "predict", "index_fasta"}


def test_models_of_another_architecture_get_no_time():
    plan = run_plan("s", shard_doc(10, {"esm": [100]}), {"esm": "tiny"}, 0, table=measured())
    assert plan["models"]["esm"]["expected_gpu_seconds"] == []
    assert plan["disk"]["embeddings_bytes"] is None  # no published width to count with


def test_cpu_seconds_from_the_table_and_told_where_no_gpu_is_visible(tmp_path):
    cpu = [{"cpu": "C", "threads": 1, "model": "esm", "tokens_per_s": 2.0, "source": "d.json"}]
    models = {"dnabert": "zhihan1996/DNABERT-S", "esm": "esm2_t36_3B_UR50D"}
    doc = shard_doc(1000, {"dnabert": [60000, 40000], "esm": [3000, 5000]})
    plan = run_plan("s", doc, models, input_bytes=0, table=[], cpu_table=cpu)
    assert plan["models"]["esm"]["expected_cpu_seconds"] == [
        {"cpu": "C", "threads": 1, "seconds": 4000.0, "tokens_per_s": 2.0, "source": "d.json"}
    ]  # 8000 tokens at 2 tokens/s
    assert plan["models"]["dnabert"]["expected_cpu_seconds"] == []
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    note = cpu_note(2, "why", {"s": tmp_path / "plan.json", "t": tmp_path / "none.json"})
    assert note.startswith(
        "--resources gpu=2 asks for GPUs, but none is visible here (why): the embed jobs will "
        "run ESM-2 and DNABERT-S on the CPU"
    )
    assert "sample 's': esm 67 min; sample 't': its plan line (when plan_shards runs)" in note
