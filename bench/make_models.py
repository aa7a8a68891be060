"""Write random-weight models in the formats users bring, for GPU workflow runs.

- ESM-2: a fair-esm ``.pt`` checkpoint laid out as the published ones
  (``encoder.sentence_encoder.*`` keys, ``cfg["model"]`` an ``argparse.Namespace``, a
  ``-contact-regression.pt`` beside it), weights in fp16 like the published files.
- DNABERT-S: a Hugging Face-layout folder (config.json, tokenizer.json, model.safetensors) of the
  full architecture, with a BPE tokenizer of vocab 4096 trained on random DNA.

Same FLOPs as the trained models, meaningless embeddings.

    python -m bench.make_models --esm 3B --dnabert full --out /tmp/models
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from virnuc_core.engine.models.dnabert_tiny import FULL_CONFIG, TINY_CONFIG, write_folder
from virnuc_core.engine.models.esm2_load import ESM2_ARCH, random_model


def save_esm_checkpoint(size: str, out_dir: Path, device: str) -> Path:
    """A random ESM-2 of a published size as ``<out_dir>/<fair-esm name>.pt``."""
    import argparse as ap

    name, arch = ESM2_ARCH[size]
    model, _ = random_model(seed=0, device=device, **arch)
    state, regression = {}, {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu", torch.float16 if value.is_floating_point() else None)
        if key.startswith("contact_head.regression"):
            regression[key] = value
        elif key.startswith("lm_head"):
            state["encoder." + key] = value
        else:
            state["encoder.sentence_encoder." + key] = value
    cfg = ap.Namespace(
        encoder_layers=arch["num_layers"],
        encoder_embed_dim=arch["embed_dim"],
        encoder_ffn_embed_dim=4 * arch["embed_dim"],
        encoder_attention_heads=arch["attention_heads"],
        token_dropout=True,
        arch="ESM2",
    )
    path = out_dir / f"{name}.pt"
    torch.save({"model": state, "cfg": {"model": cfg}}, path)
    torch.save({"model": regression}, out_dir / f"{name}-contact-regression.pt")
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--esm", default="3B", choices=sorted(ESM2_ARCH))
    p.add_argument("--dnabert", default="full", choices=["full", "tiny"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    esm_path = save_esm_checkpoint(a.esm, a.out, a.device)
    print(f"ESM-2 {a.esm}: {esm_path} ({time.time() - start:.0f} s)", flush=True)
    cfg = FULL_CONFIG if a.dnabert == "full" else TINY_CONFIG
    folder = write_folder(a.out / f"dnabert_{a.dnabert}", cfg)
    print(f"DNABERT-S ({a.dnabert}): {folder} ({time.time() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
