"""DNABERT-S loading: config, weights (safe formats only), key checks, tokenizer, checksums.

A model folder has the Hugging Face layout: ``config.json``, ``tokenizer.json`` and the weights as
``model.safetensors`` (or a sharded ``model.safetensors.index.json``) or ``pytorch_model.bin``
(or its sharded index). ``.bin`` files are read with ``torch.load(weights_only=True)`` only.
See :mod:`virnuc_core.engine.models.dnabert` for the architecture and the key names.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("virnuc.dnabert")

# Checkpoint keys that exist in published files but are not needed for embeddings.
_IGNORED = re.compile(
    r"^(cls\.|pooler\.|classifier\.|contrast_head\.|embeddings\.position_ids$"
    r"|embeddings\.token_type_ids$)"
)


@dataclass(frozen=True)
class DnabertConfig:
    """The few config.json fields the forward pass depends on (DNABERT-2 / DNABERT-S defaults)."""

    vocab_size: int = 4096
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, d: dict) -> DnabertConfig:
        """Build from a config.json mapping; unknown keys are ignored, missing ones defaulted."""
        fields = {f: d[f] for f in cls.__dataclass_fields__ if f in d}
        cfg = cls(**fields)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(
                f"hidden_size {cfg.hidden_size} is not a multiple of num_attention_heads "
                f"{cfg.num_attention_heads}"
            )
        return cfg

    def to_dict(self) -> dict:
        """The fields as a config.json-style mapping (plus the architecture marker)."""
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out.update(
            model_type="bert",
            architectures=["BertModel"],
            hidden_act="gelu",
            pad_token_id=0,
            alibi_starting_size=512,
            attention_probs_dropout_prob=0.0,
        )
        return out


def expected_shapes(cfg: DnabertConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key the model needs (no ``bert.`` prefix) and its shape."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, h),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{n}."
        shapes.update(
            {
                p + "attention.self.Wqkv.weight": (3 * h, h),
                p + "attention.self.Wqkv.bias": (3 * h,),
                p + "attention.output.dense.weight": (h, h),
                p + "attention.output.dense.bias": (h,),
                p + "attention.output.LayerNorm.weight": (h,),
                p + "attention.output.LayerNorm.bias": (h,),
                p + "mlp.gated_layers.weight": (2 * i, h),
                p + "mlp.wo.weight": (h, i),
                p + "mlp.wo.bias": (h,),
                p + "mlp.layernorm.weight": (h,),
                p + "mlp.layernorm.bias": (h,),
            }
        )
    return shapes


def check_state_dict(raw: dict[str, torch.Tensor], cfg: DnabertConfig, source: str) -> dict:
    """Normalise key names and check them against ``cfg``; returns the needed tensors only.

    Accepts keys with or without the ``bert.`` prefix (a ``BertForMaskedLM`` save has it, a
    ``BertModel`` save does not); drops known extras (MLM head ``cls.*``, ``pooler.*``, ...);
    raises ``ValueError`` naming every missing key and every shape mismatch.
    """
    state = {}
    for key, value in raw.items():
        name = key.removeprefix("bert.")
        if _IGNORED.match(name):
            continue
        state[name] = value
    want = expected_shapes(cfg)
    unknown = sorted(set(state) - set(want))
    missing = sorted(set(want) - set(state))
    bad = [
        f"{k}: expected {tuple(want[k])}, found {tuple(state[k].shape)}"
        for k in sorted(set(want) & set(state))
        if tuple(state[k].shape) != want[k]
    ]
    if missing or bad:
        lines = [f"{source}: not a DNABERT-S checkpoint matching its config.json"]
        if missing:
            lines.append(
                f"missing keys ({len(missing)}): "
                + ", ".join(missing[:20])
                + (" ..." if len(missing) > 20 else "")
            )
        if bad:
            lines.append("wrong shapes: " + "; ".join(bad[:20]))
        if unknown:
            lines.append("unexpected keys: " + ", ".join(unknown[:20]))
        raise ValueError("\n".join(lines))
    if unknown:
        log.warning("%s: ignoring %d unexpected keys, e.g. %s", source, len(unknown), unknown[:5])
    return {k: state[k] for k in want}


DNABERT_TODO = (
    "Fetch the model folder again (virnuc-fetch-models --out MODELS_DIR fetches only "
    "what is missing or changed) or restore it from a copy you trust."
)


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of one weights file; a corrupt one raises our error naming it, never torch's
    (which would advise ``weights_only=False``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - SafetensorError (header, sizes) names no file
            from virnuc_core.util.corrupt import unreadable

            raise unreadable(path, "safetensors weights file", str(e), DNABERT_TODO) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - told apart from the file's structure
        from virnuc_core.util.corrupt import weights_only_error

        raise weights_only_error(path, e, "PyTorch weights file", DNABERT_TODO) from None


def weights_files(folder: Path) -> list[Path]:
    """The weights file(s) :func:`read_weights` reads, safetensors preferred."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            return [folder / shard for shard in shards]
    raise FileNotFoundError(
        f"{folder}: no model.safetensors or pytorch_model.bin (or a sharded index) found"
    )


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of the folder's weights file(s), safetensors preferred."""
    out: dict[str, torch.Tensor] = {}
    for path in weights_files(folder):
        out.update(_load_file(path))
    return out


def require_files(folder: Path) -> None:
    """FileNotFoundError naming config.json or tokenizer.json when the folder lacks it."""
    for name in ("config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: {name} is missing")


def weights_checksum(folder: Path) -> tuple[str, str]:
    """(sha256, file names) of the folder's weights file(s): one file's own sha256, several
    files' combined (:func:`~virnuc_core.util.digests.combined_sha256`), each checked against the
    models folder's lock when there is one.

    Called just before :func:`read_folder`: each file is read once here, sequentially, and
    again by the loader from the page cache.
    """
    from virnuc_core.engine.model_files import check_against_lock
    from virnuc_core.util.digests import cached_sha256, combined_sha256

    require_files(folder)
    digests = {}
    for path in weights_files(folder):
        digests[path.name] = cached_sha256(path)
        check_against_lock(path, digests[path.name])
    return combined_sha256(digests), ", ".join(sorted(digests))


def resolve_folder(spec: str) -> Path:
    """A local model folder. A hub name is refused (runs never download):
    :func:`virnuc_core.registry.resolve_model_spec` maps it to the fetched, locked
    copy."""
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{spec}: a DNABERT-S model must be a folder (Hugging Face layout)")
    if spec.count("/") != 1 or spec.startswith((".", "/")):
        raise FileNotFoundError(f"{spec}: no such folder, and not a hub name like 'owner/model'")
    from virnuc_core.engine.model_files import FETCH, ModelFilesError

    raise ModelFilesError(
        f"{spec}: DNABERT-S is loaded from local files only (runs never download). Fetch it once "
        f"({FETCH.format(folder='models')}) and resolve the name through the models folder, or "
        "give a local model folder."
    )


def read_folder(folder: Path) -> tuple[DnabertConfig, dict[str, torch.Tensor], DnaTokenizer]:
    """Config, checked fp32 weights and tokenizer from a Hugging Face-layout folder."""
    require_files(folder)
    cfg = DnabertConfig.from_dict(json.loads((folder / "config.json").read_text()))
    weights = check_state_dict(read_weights(folder), cfg, str(folder))
    weights = {k: v.to(torch.float32) for k, v in weights.items()}
    return cfg, weights, DnaTokenizer.from_file(folder / "tokenizer.json")


class DnaTokenizer:
    """The model folder's own ``tokenizer.json``, run by the Rust ``tokenizers`` library.

    Encodes like ``AutoTokenizer(...)(seq)["input_ids"]`` did in the original: no padding, no
    truncation, special tokens added by the file's post-processor ([CLS] ... [SEP]). If a file had
    no post-processor, [CLS] and [SEP] are added here so the model sees what it was trained on.
    """

    def __init__(self, tokenizer) -> None:
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tok = tokenizer
        self.cls_id = tokenizer.token_to_id("[CLS]")
        self.sep_id = tokenizer.token_to_id("[SEP]")
        if self.cls_id is None or self.sep_id is None:
            raise ValueError("tokenizer.json has no [CLS] / [SEP] token")
        self.adds_specials = json.loads(tokenizer.to_str()).get("post_processor") is not None
        if not self.adds_specials:
            log.warning("tokenizer.json has no post-processor; adding [CLS] and [SEP] explicitly")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> DnaTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, seqs: list[str]) -> list[np.ndarray]:
        """int64 token ids of every sequence, [CLS] first and [SEP] last."""
        encodings = self._tok.encode_batch(list(seqs), add_special_tokens=True)
        out = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        if not self.adds_specials:
            out = [
                np.concatenate([[self.cls_id], ids, [self.sep_id]]).astype(np.int64) for ids in out
            ]
        return out


# ------------------------------------------------------------------ fetching (online)

# What DNABERT-S needs from the hub (no remote code, no tokenizer_config: see DnaTokenizer)
DNABERT_PATTERNS = [
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model-*.bin",
    "pytorch_model.bin.index.json",
]
# Which commit the fetch takes when none is given: the hub's newest ("main"), resolved to its
# 40-hex commit id at fetch time and recorded in the lock, which pins it from then on.
DEFAULT_BRANCH = "main"


def newest_commit(repo: str) -> str:
    """The commit the hub's ``main`` of ``repo`` is now (needs the network)."""
    import huggingface_hub  # looked up at call time: tests replace model_info

    commit = huggingface_hub.model_info(repo, revision=DEFAULT_BRANCH).sha
    log.info("%s: %s is commit %s", repo, DEFAULT_BRANCH, commit)
    return commit


def fetch(dest: Path, repo: str, revision: str | None, good) -> list[tuple[Path, str]]:
    """DNABERT-S (hub repository ``repo``) at ``revision`` into the folder ``dest``, downloaded
    aside and then renamed; every file with its source. Fetched whole (``good`` unused)."""
    import huggingface_hub  # looked up at call time: tests replace snapshot_download

    from virnuc_core.engine.model_files import ModelFilesError, replace_dir

    del good
    part = dest.with_name(f".{dest.name}.part")
    log.info("fetching %s at %s", repo, revision)
    huggingface_hub.snapshot_download(
        repo_id=repo, revision=revision, allow_patterns=DNABERT_PATTERNS, local_dir=part
    )
    shutil.rmtree(part / ".cache", ignore_errors=True)  # the hub client's resume notes
    names = {p.name for p in part.iterdir()}
    weights = {"model.safetensors", "pytorch_model.bin"} | {n for n in names if "index" in n}
    missing = [n for n in ("config.json", "tokenizer.json") if n not in names]
    if missing or not names & weights:
        raise ModelFilesError(
            f"{repo} at {revision} lacks {missing or 'weights'}: is it the right "
            f"revision? (got {sorted(names)})"
        )
    replace_dir(part, dest)
    source = f"https://huggingface.co/{repo}"
    return [(p, source) for p in sorted(p for p in dest.rglob("*") if p.is_file())]
