"""A tiny DNABERT-S built in code (model spec ``"tiny"``), and random full-size stand-ins.

Everything here is deterministic (seeded): the same call gives the same weights and the same
tokenizer in every process. Used by the tests, the demo and the benches; never a real model.

- :func:`train_dna_bpe`: a BPE tokenizer trained with the ``tokenizers`` library on seeded random
  DNA, with DNABERT-2's special tokens ([PAD] [UNK] [CLS] [SEP] [MASK], ids 0-4 here) and a
  ``TemplateProcessing`` post-processor adding [CLS] ... [SEP].
- :func:`random_state_dict`: seeded random weights under the real key names.
- :func:`write_folder`: the Hugging Face folder layout (config.json, tokenizer.json, weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from virnuc_core.engine.models.dnabert_load import DnabertConfig, expected_shapes

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

TINY_CONFIG = DnabertConfig(
    vocab_size=128,
    hidden_size=96,
    num_hidden_layers=2,
    num_attention_heads=12,
    intermediate_size=128,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
)
FULL_CONFIG = DnabertConfig()  # DNABERT-S: 12 layers, 768 wide, 12 heads, 3072, vocab 4096


def random_dna(rng: np.random.Generator, n: int, low: int, high: int) -> list[str]:
    """``n`` uniform random DNA strings with lengths in [low, high]."""
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    lengths = rng.integers(low, high + 1, size=n)
    return [letters[rng.integers(0, 4, size=int(k))].tobytes().decode() for k in lengths]


def train_dna_bpe(vocab_size: int, seed: int = 0, n_bases: int = 200_000):
    """A ``tokenizers.Tokenizer`` (BPE) trained on ``n_bases`` of seeded random DNA."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    corpus = random_dna(np.random.default_rng(seed), max(1, n_bases // 500), 400, 600)
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=list("ACGT"),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def random_state_dict(cfg: DnabertConfig, seed: int = 0, scale: float = 1.0) -> dict:
    """Seeded random fp32 weights for every needed key (no ``bert.`` prefix).

    Matrices ~ N(0, (scale / sqrt(fan_in))^2), biases and LayerNorm shifts ~ N(0, 0.05^2), LayerNorm
    gains ~ 1 + N(0, 0.1^2), embeddings ~ N(0, 1): large enough that attention is far from uniform.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in expected_shapes(cfg).items():
        if "LayerNorm" in key or "layernorm" in key:
            base = 1.0 if key.endswith("weight") else 0.0
            t = base + (0.1 if base else 0.05) * torch.randn(shape, generator=g)
        elif "embeddings" in key:
            t = torch.randn(shape, generator=g)
        elif key.endswith("bias"):
            t = 0.05 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) * (scale / shape[1] ** 0.5)
        out[key] = t.contiguous()
    return out


def tiny_parts(cfg: DnabertConfig = TINY_CONFIG, seed: int = 0):
    """(config, fp32 state dict, ``tokenizers.Tokenizer``) of the tiny model."""
    return cfg, random_state_dict(cfg, seed), train_dna_bpe(cfg.vocab_size, seed, 100_000)


def write_folder(
    folder: str | Path,
    cfg: DnabertConfig = TINY_CONFIG,
    state: dict | None = None,
    tokenizer=None,
    fmt: str = "safetensors",
    prefix: str = "",
    seed: int = 0,
) -> Path:
    """Write a Hugging Face-layout model folder; defaults to the tiny model.

    ``fmt`` is ``"safetensors"`` (model.safetensors) or ``"bin"`` (pytorch_model.bin);
    ``prefix`` is prepended to every key (``"bert."`` mimics a ``BertForMaskedLM`` save).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if state is None:
        state = random_state_dict(cfg, seed)
    if tokenizer is None:
        tokenizer = train_dna_bpe(cfg.vocab_size, seed, 100_000)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    tokenizer.save(str(folder / "tokenizer.json"))
    state = {prefix + k: v.contiguous() for k, v in state.items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"))
    elif fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        raise ValueError(f"fmt must be 'safetensors' or 'bin', got {fmt!r}")
    return folder
