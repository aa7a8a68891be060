"""Small model files in the real formats, for the loading, fetching and verification tests."""

from __future__ import annotations

import argparse
import fnmatch
import shutil
from pathlib import Path

import torch


def save_fair_checkpoint(model, path, with_regression=True):
    """Write ``model`` as the published ESM-2 .pt files are laid out."""
    state = {}
    regression = {}
    for key, value in model.state_dict().items():
        if key.startswith("contact_head.regression"):
            regression[key] = value.clone()
        elif key.startswith("lm_head"):
            state["encoder." + key] = value.clone()
        else:
            state["encoder.sentence_encoder." + key] = value.clone()
    cfg = argparse.Namespace(
        encoder_layers=model.num_layers,
        encoder_embed_dim=model.embed_dim,
        encoder_ffn_embed_dim=4 * model.embed_dim,
        encoder_attention_heads=model.attention_heads,
        token_dropout=model.token_dropout,
        arch="ESM2",
    )
    torch.save({"model": state, "cfg": {"model": cfg}}, path)
    if with_regression:
        torch.save({"model": regression}, str(path.with_suffix("")) + "-contact-regression.pt")


class FakeHub:
    """Stands for the Hugging Face hub and fair-esm's download server, from local files.

    ``snapshot_download`` copies the files of ``repo`` that ``allow_patterns`` match into
    ``local_dir`` (and leaves the hub client's ``.cache`` notes there, as the real one does);
    ``download_url_to_file`` copies the file registered for the URL. Every call is recorded.
    """

    def __init__(self, repo: Path, urls: dict[str, Path], main: str = "f" * 40):
        self.repo, self.urls, self.main = repo, urls, main
        self.snapshots: list[dict] = []
        self.downloads: list[str] = []

    def snapshot_download(self, repo_id, *, revision=None, allow_patterns=None, local_dir=None):
        self.snapshots.append({"repo_id": repo_id, "revision": revision, "allow": allow_patterns})
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        for f in self.repo.iterdir():
            if any(fnmatch.fnmatch(f.name, pat) for pat in allow_patterns):
                shutil.copyfile(f, local_dir / f.name)
        notes = local_dir / ".cache" / "huggingface" / "download"
        notes.mkdir(parents=True, exist_ok=True)
        (notes / "config.json.metadata").write_text("etag\n")
        return str(local_dir)

    def model_info(self, repo_id, *, revision=None):
        """The commit a branch points at (the only field the fetch reads)."""
        self.snapshots.append({"repo_id": repo_id, "info": revision})
        return type("Info", (), {"sha": self.main})()

    def download_url_to_file(self, url, dst, hash_prefix=None, progress=True):
        self.downloads.append(url)
        shutil.copyfile(self.urls[url], dst)

    def install(self, monkeypatch) -> FakeHub:
        import huggingface_hub
        import torch.hub

        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        monkeypatch.setattr(huggingface_hub, "model_info", self.model_info)
        monkeypatch.setattr(torch.hub, "download_url_to_file", self.download_url_to_file)
        return self


def offline(monkeypatch) -> None:
    """Make any download fail the test: for runs that must not fetch anything."""
    import huggingface_hub
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(huggingface_hub, "model_info", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
