"""The models folder: fetch (downloads replaced by local copies), lock, verify, resolve, load.

No network: ``snapshot_download`` and ``download_url_to_file`` are replaced by functions that
copy small files in the real formats (a tiny DNABERT-S folder, a tiny fair-esm checkpoint), and
every test that must not fetch makes any download fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("esm")

from tests.model_fixtures import FakeHub, offline, save_fair_checkpoint  # noqa: E402
from virnuc_core.commands import fetch_models_main  # noqa: E402
from virnuc_core.engine import model_files  # noqa: E402
from virnuc_core.engine.model_files import (  # noqa: E402  # noqa: E402
    DNABERT_S_REPO,
    HUB_MODEL_URL,
    HUB_REGRESSION_URL,
    LOCK_NAME,
    ModelFilesError,
    fetch_models,
    locked_paths,
    resolve_model_spec,
    verify_models,
)
from virnuc_core.engine.models import (
    dnabert,
    esm2,  # noqa: E402
)
from virnuc_core.engine.models.dnabert_tiny import write_folder  # noqa: E402
from virnuc_core.engine.models.esm2_load import random_model  # noqa: E402

REV = "0123456789abcdef0123456789abcdef01234567"
ESM = "esm2_t36_3B_UR50D"
PT, REG = f"esm2/{ESM}.pt", f"esm2/{ESM}-contact-regression.pt"
BIN = "dnabert-s/pytorch_model.bin"


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """What the hub and fair-esm's server hold, as small files in the real formats."""
    root = tmp_path_factory.mktemp("remote")
    repo = write_folder(root / "hub", fmt="bin")  # DNABERT-S's repository holds a .bin
    for extra in ("bert_layers.py", "README.md", "tokenizer_config.json"):
        (repo / extra).write_text("not needed\n")  # remote code and the like: never fetched
    model, _ = random_model(seed=7, num_layers=2, embed_dim=32, attention_heads=2)
    (root / "esm").mkdir()
    save_fair_checkpoint(model, root / "esm" / f"{ESM}.pt")
    urls = {
        HUB_MODEL_URL.format(name=ESM): root / "esm" / f"{ESM}.pt",
        HUB_REGRESSION_URL.format(name=ESM): root / "esm" / f"{ESM}-contact-regression.pt",
    }
    return repo, urls


@pytest.fixture
def fetched(tmp_path, monkeypatch, remote):
    hub = FakeHub(*remote).install(monkeypatch)
    out = tmp_path / "models"
    assert fetch_models(out, dnabert_revision=REV) == out / LOCK_NAME
    return out, hub


def _files_under(folder: Path) -> set[str]:
    return {
        (Path(d) / f).relative_to(folder).as_posix()
        for d, _, names in os.walk(folder)
        for f in names
        if f != LOCK_NAME
    }


def _flip_byte(path: Path, where: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * where)] ^= 0x01
    path.write_bytes(bytes(raw))


# -------------------------------------------------------------------------------- fetch + lock


def test_fetch_locks_every_file_with_size_and_sha256(fetched, remote):
    out, hub = fetched
    lock = json.loads((out / LOCK_NAME).read_text())
    entries = {e["path"]: e for e in lock["files"]}
    want = {"dnabert-s/config.json", "dnabert-s/tokenizer.json", BIN, PT, REG}
    assert set(entries) == want == _files_under(out)  # no .cache, no .part left behind
    for rel, e in entries.items():
        data = (out / rel).read_bytes()
        assert e["size"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()
        assert e["model"] == ("esm" if rel.startswith("esm2/") else "dnabert")
    assert entries[BIN]["revision"] == REV and DNABERT_S_REPO in entries[BIN]["source"]
    assert entries[PT]["source"] == HUB_MODEL_URL.format(name=ESM)
    assert (out / PT).read_bytes() == remote[1][HUB_MODEL_URL.format(name=ESM)].read_bytes()
    assert hub.snapshots == [
        {"repo_id": DNABERT_S_REPO, "revision": REV, "allow": model_files.DNABERT_PATTERNS}
    ]
    assert sorted(hub.downloads) == sorted(remote[1])
    assert lock["models"]["dnabert"] == {
        "name": DNABERT_S_REPO,
        "revision": REV,
        "path": "dnabert-s",
    }
    assert lock["models"]["esm"]["name"] == ESM


def test_fetch_is_skipped_when_every_file_is_there_and_matches(fetched, monkeypatch):
    out, _ = fetched
    before = (out / LOCK_NAME).read_bytes()
    offline(monkeypatch)  # any download call fails the test
    fetch_models(out, dnabert_revision=REV)
    assert (out / LOCK_NAME).read_bytes() == before


def test_fetch_again_fetches_only_what_is_missing_or_changed(fetched):
    out, hub = fetched
    hub.snapshots.clear()
    hub.downloads.clear()
    (out / REG).unlink()
    fetch_models(out, dnabert_revision=REV)
    assert hub.downloads == [HUB_REGRESSION_URL.format(name=ESM)] and hub.snapshots == []
    _flip_byte(out / "dnabert-s" / "config.json", 0.0)
    hub.downloads.clear()
    fetch_models(out, dnabert_revision=REV)
    assert len(hub.snapshots) == 1 and hub.downloads == []
    verify_models(out)


def test_another_revision_is_fetched_again(fetched):
    out, hub = fetched
    other = "f" * 40
    fetch_models(out, dnabert_revision=other)
    assert hub.snapshots[-1]["revision"] == other
    assert json.loads((out / LOCK_NAME).read_text())["models"]["dnabert"]["revision"] == other


@pytest.mark.parametrize("revision", ["main", "v1.0", "0123abc"])
def test_fetch_needs_a_full_commit_id(tmp_path, monkeypatch, revision):
    offline(monkeypatch)
    with pytest.raises(ModelFilesError, match="40-hex commit"):
        fetch_models(tmp_path / "models", dnabert_revision=revision)


def test_no_revision_takes_the_newest_commit_and_locks_it(tmp_path, monkeypatch, remote):
    hub = FakeHub(*remote, main="a" * 40).install(monkeypatch)
    out = tmp_path / "models"
    fetch_models(out)
    assert hub.snapshots[0] == {"repo_id": DNABERT_S_REPO, "info": "main"}
    assert hub.snapshots[1]["revision"] == "a" * 40  # fetched at the commit, not the branch
    assert json.loads((out / LOCK_NAME).read_text())["models"]["dnabert"]["revision"] == "a" * 40
    hub.main = "b" * 40  # the hub moves on: a repair keeps the locked commit, fetches nothing
    before = len(hub.snapshots)
    fetch_models(out)
    assert len(hub.snapshots) == before


def test_fetch_script(tmp_path, monkeypatch, remote, capsys):
    FakeHub(*remote).install(monkeypatch)
    out = tmp_path / "m"
    code = fetch_models_main(["--out", str(out), "--dnabert-revision", "main"])
    assert code == 1 and "40-hex commit" in capsys.readouterr().err
    code = fetch_models_main(["--out", str(out), "--dnabert-revision", REV])
    assert code == 0 and PT in capsys.readouterr().out
    verify_models(out)


# -------------------------------------------------------------------------------------- verify


def test_verify_passes_offline(fetched, monkeypatch):
    out, _ = fetched
    offline(monkeypatch)
    assert len(verify_models(out)["files"]) == 5
    assert sorted(locked_paths(out)) == sorted(out / p for p in _files_under(out))


@pytest.mark.parametrize(
    "rel,damage,words",
    [
        (PT, "flip", "content changed"),
        (BIN, "flip", "content changed"),
        (REG, "delete", "missing"),
        ("dnabert-s/tokenizer.json", "delete", "missing"),
        (PT, "truncate", "size changed"),
        (BIN, "truncate", "size changed"),
    ],
)
def test_verify_fails_naming_the_damaged_file(fetched, rel, damage, words):
    out, _ = fetched
    path = out / rel
    if damage == "flip":
        _flip_byte(path)
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ModelFilesError) as err:
        verify_models(out)
    msg = str(err.value)
    assert f"{rel}: {words}" in msg and "1 of the 5" in msg
    assert "virnuc-fetch-models --out" in msg and "restore" in msg
    others = _files_under(out) - {rel}
    assert not any(f"{o}:" in msg for o in others)


def test_verify_names_every_damaged_file_at_once(fetched):
    out, _ = fetched
    _flip_byte(out / PT)
    (out / REG).unlink()
    (out / BIN).write_bytes(b"")
    with pytest.raises(ModelFilesError) as err:
        verify_models(out)
    msg = str(err.value)
    assert f"{PT}: content changed" in msg and f"{REG}: missing" in msg
    assert f"{BIN}: size changed" in msg and "3 of the 5" in msg


def test_verify_without_or_with_a_broken_lock(tmp_path):
    with pytest.raises(ModelFilesError, match=r"no models\.lock\.json.*virnuc-fetch-models"):
        verify_models(tmp_path)
    (tmp_path / LOCK_NAME).write_text("{not json")
    with pytest.raises(ModelFilesError, match="not a readable lock file"):
        verify_models(tmp_path)


# ------------------------------------------------------------------------------ resolve + load


def test_resolve_maps_hub_names_to_the_locked_copies(fetched, monkeypatch):
    out, _ = fetched
    offline(monkeypatch)
    d = resolve_model_spec("dnabert", DNABERT_S_REPO, out, dnabert_revision=REV)
    e = resolve_model_spec("esm", ESM, out)
    assert Path(d) == out / "dnabert-s" and Path(e) == out / PT
    assert resolve_model_spec("dnabert", "tiny", out) == "tiny"
    assert resolve_model_spec("esm", "tiny") == "tiny"
    assert resolve_model_spec("dnabert", d) == d and resolve_model_spec("esm", e) == e  # local
    missing = str(out / "nope.pt")
    assert resolve_model_spec("esm", missing, out) == missing  # the loader names it


def test_loaded_models_record_the_sha256_of_their_weights_files(fetched, monkeypatch):
    out, _ = fetched
    offline(monkeypatch)
    lock = {e["path"]: e["sha256"] for e in verify_models(out)["files"]}
    enc = dnabert.load(resolve_model_spec("dnabert", DNABERT_S_REPO, out))
    assert enc.describe()["weights_sha256"] == lock[BIN]
    assert lock[BIN] == hashlib.sha256((out / BIN).read_bytes()).hexdigest()
    enc = esm2.load(resolve_model_spec("esm", ESM, out))
    assert enc.describe()["weights_sha256"] == lock[PT]


@pytest.mark.parametrize(
    "model,spec,dir_kind,words",
    [
        ("dnabert", DNABERT_S_REPO, None, r"never download.*virnuc-fetch-models"),
        ("esm", ESM, None, r"never download.*virnuc-fetch-models"),
        ("esm", ESM, "empty", r"no models\.lock\.json.*virnuc-fetch-models"),
        ("esm", "esm2_t33_650M_UR50D", "fetched", r"holds 'esm2_t36_3B_UR50D'.*--esm"),
    ],
)
def test_resolve_refuses_what_it_cannot_map(fetched, monkeypatch, model, spec, dir_kind, words):
    out, _ = fetched
    offline(monkeypatch)
    folder = {None: None, "empty": out.parent / "empty", "fetched": out}[dir_kind]
    if dir_kind == "empty":
        folder.mkdir()
    with pytest.raises(ModelFilesError, match=words):
        resolve_model_spec(model, spec, folder)


def test_resolve_refuses_another_dnabert_revision(fetched):
    out, _ = fetched
    with pytest.raises(ModelFilesError, match=f"holds revision {REV}.*--dnabert-revision"):
        resolve_model_spec("dnabert", DNABERT_S_REPO, out, dnabert_revision="e" * 40)


def test_loading_a_locked_file_that_changed_fails_naming_it(fetched, tmp_path):
    out, _ = fetched
    _flip_byte(out / PT, 0.6)  # inside a tensor's bytes: torch.load alone would not notice
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(out / PT, loose / f"{ESM}.pt")
    esm2.load(str(loose / f"{ESM}.pt"))  # outside the locked folder it loads
    with pytest.raises(ModelFilesError, match=rf"{PT}: content changed|{ESM}\.pt: content changed"):
        esm2.load(resolve_model_spec("esm", ESM, out))
    _flip_byte(out / BIN, 0.6)
    with pytest.raises(ModelFilesError, match="pytorch_model.bin: content changed"):
        dnabert.load(resolve_model_spec("dnabert", DNABERT_S_REPO, out))


def test_a_locked_checkpoint_that_cannot_be_read_says_it_changed(fetched):
    """The hash runs beside the loading; a locked file cut short says "content changed" (and
    what to do), not only that it cannot be read."""
    out, _ = fetched
    (out / PT).write_bytes((out / PT).read_bytes()[:-1000])
    with pytest.raises(ModelFilesError, match=rf"{PT}: content changed|{ESM}\.pt: content changed"):
        esm2.load(resolve_model_spec("esm", ESM, out))


# ----------------------------------------------------------------- the check at every start


@pytest.mark.workflow
def test_a_truncated_model_file_is_refused_at_start_before_any_job(tmp_path):
    """The size check of every Snakemake start (workflow/rules/common.smk): a locked ESM-2
    checkpoint cut short stops even a dry run, naming the file, before any job is planned."""
    from tests.workflow_helpers import run_snakemake, write_config

    models = tmp_path / "models"
    (models / "esm2").mkdir(parents=True)
    files = {PT: b"checkpoint bytes " * 64, REG: b"regression bytes " * 8}
    entries = []
    for rel, data in files.items():
        (models / rel).write_bytes(data)
        entries.append(
            {
                "path": rel,
                "model": "esm",
                "name": ESM,
                "source": f"https://example.org/{rel}",
                "revision": None,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    lock = {
        "format": 1,
        "models": {"esm": {"name": ESM, "revision": None, "path": PT}},
        "files": entries,
    }
    (models / LOCK_NAME).write_text(json.dumps(lock))
    write_config(tmp_path, models={"dnabert": "tiny", "esm": ESM}, models_dir=str(models))
    (models / PT).write_bytes(files[PT][:-100])  # a download cut short
    proc = run_snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"{PT}: size changed (truncated or replaced)" in out
    assert f"{REG}:" not in out  # the intact file is not named
    assert "virnuc-fetch-models --out" in out
    assert "Job stats" not in out and not (tmp_path / "results").exists()
