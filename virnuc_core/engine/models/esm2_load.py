"""Loading ESM-2 weights safely and building fair-esm's model from them.

fair-esm's own ``load_model_and_alphabet_local`` calls ``torch.load`` without ``weights_only``,
which torch >= 2.6 refuses for the published checkpoints (their ``cfg["model"]`` is an
``argparse.Namespace``). Here every file is read with ``weights_only=True`` and exactly
``argparse.Namespace`` allow-listed, and the model is then built by fair-esm's builder
(``esm.pretrained.load_model_and_alphabet_core``), key-name upgrades included.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from virnuc_core.engine.models.building import no_weight_init

log = logging.getLogger("virnuc.esm2")

TINY = {"num_layers": 2, "embed_dim": 64, "attention_heads": 4}  # the "tiny" model, seed 0
ESM2_ARCH = {  # the published sizes (fair-esm model name -> architecture)
    "8M": ("esm2_t6_8M_UR50D", {"num_layers": 6, "embed_dim": 320, "attention_heads": 20}),
    "35M": ("esm2_t12_35M_UR50D", {"num_layers": 12, "embed_dim": 480, "attention_heads": 20}),
    "150M": ("esm2_t30_150M_UR50D", {"num_layers": 30, "embed_dim": 640, "attention_heads": 20}),
    "650M": ("esm2_t33_650M_UR50D", {"num_layers": 33, "embed_dim": 1280, "attention_heads": 20}),
    "3B": ("esm2_t36_3B_UR50D", {"num_layers": 36, "embed_dim": 2560, "attention_heads": 40}),
    "15B": ("esm2_t48_15B_UR50D", {"num_layers": 48, "embed_dim": 5120, "attention_heads": 40}),
}


ESM_TODO = (
    "Fetch it again (virnuc-fetch-models --out MODELS_DIR fetches only what is missing "
    "or changed) or restore it from a copy you trust."
)


def safe_load(path: str | Path, mmap: bool = False) -> dict:
    """``torch.load`` with ``weights_only=True`` and only ``argparse.Namespace`` allowed.

    With ``mmap`` (files in torch's zip format only; others are read whole), the tensors map the
    file instead of being copied into memory: the model built from them copies each once.
    A corrupt or truncated file raises :class:`~virnuc_core.util.corrupt.UnreadableModelFileError`;
    a readable one naming any other global, ``ValueError`` ("refusing to load"); both name the
    file. Neither suggests unsafe loading.
    """
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - told apart below, from the file's structure
        from virnuc_core.util.corrupt import weights_only_error

        raise weights_only_error(path, e, "ESM-2 checkpoint file", ESM_TODO) from None


def random_model(seed: int = 0, device: str | torch.device = "cpu", **arch):
    """A random ESM-2 (fair-esm's ESM2 class and default init), the same for every call.

    ``arch``: num_layers, embed_dim, attention_heads (default: the "tiny" model); built directly
    on ``device`` (fast for big ones on a GPU). See ``ESM2_ARCH`` for the published sizes.
    """
    import esm

    arch = {**TINY, **arch}
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = esm.model.esm2.ESM2(alphabet=alphabet, token_dropout=True, **arch)
    return model.eval(), alphabet


def _from_data(name: str, model_data: dict, regression_data: dict | None):
    import esm

    if "cfg" not in model_data or "model" not in model_data:
        raise ValueError(f"{name}: not an ESM-2 checkpoint (no 'cfg' / 'model' entries)")
    if not name.startswith("esm2"):
        name = f"esm2_{name}"  # fair-esm picks its ESM-2 builder by this prefix
    with warnings.catch_warnings(), no_weight_init():
        # contact-regression weights are not needed for embeddings
        warnings.filterwarnings("ignore", message="Regression weights not found")
        model, alphabet = esm.pretrained.load_model_and_alphabet_core(
            name, model_data, regression_data
        )
    return model.eval(), alphabet


def _record_checksum(model: nn.Module, sha256: str, of: str) -> None:
    # read by ESMEncoder (esm2.py) for describe(): the checksum of the weights as loaded
    model.virnuc_weights_sha256 = sha256
    model.virnuc_weights_of = of


def _load_checkpoint(path: Path):
    """(model, alphabet) from a local ``.pt``; its sha256 recorded on the model.

    The file is hashed (one sequential pass) in a thread while the model is built from it
    (``torch.load`` maps the file; building copies each tensor once): both release the GIL, so
    the two passes over the 3B model's file overlap, and the one behind finds the page cache
    filled. Building before the check is safe (``weights_only`` executes nothing); the model is
    returned only once the hash is checked against the lock of a locked models folder.
    """
    from virnuc_core.engine.model_files import check_against_lock
    from virnuc_core.util.digests import cached_sha256

    if not path.is_file():
        raise FileNotFoundError(f"ESM-2 checkpoint not found: {path}")
    regression = Path(str(path.with_suffix("")) + "-contact-regression.pt")
    reg = safe_load(regression) if regression.is_file() else None
    with ThreadPoolExecutor(1) as pool:
        hashing = pool.submit(cached_sha256, path)
        try:
            model, alphabet = _from_data(path.stem, safe_load(path, mmap=True), reg)
        except Exception:
            check_against_lock(path, hashing.result())  # a locked file that changed: said first
            raise
        sha256 = hashing.result()
    check_against_lock(path, sha256)
    _record_checksum(model, sha256, path.name)
    return model, alphabet


def build_fair_model(spec: str):
    """(fair-esm ESM2 in fp32 on the CPU, alphabet) for "tiny" or a local ``.pt`` path.

    The model carries ``virnuc_weights_sha256``: the sha256 of the ``.pt`` file, or for "tiny"
    of its tensors. A fair-esm name (``esm2_t36_3B_UR50D``) is refused: runs never download;
    :func:`virnuc_core.registry.resolve_model_spec` maps it to the fetched, locked copy.
    """
    if spec == "tiny":
        from virnuc_core.util.digests import tensors_sha256

        model, alphabet = random_model()
        _record_checksum(model, tensors_sha256(model.state_dict()), "tensors (built in code)")
        return model, alphabet
    path = Path(spec).expanduser()
    if path.suffix == ".pt" or path.exists():
        return _load_checkpoint(path)
    if not spec.startswith("esm2_"):
        raise ValueError(f"ESM-2 model spec must be 'tiny', a .pt path or an esm2_* name: {spec!r}")
    from virnuc_core.engine.model_files import FETCH, ModelFilesError

    raise ModelFilesError(
        f"{spec}: ESM-2 is loaded from local files only (runs never download). Fetch it once "
        f"({FETCH.format(folder='models')} --esm {spec}) and resolve the name through the "
        "models folder, or give the path of the .pt checkpoint."
    )


# ------------------------------------------------------------------ fetching (online)

# fair-esm's download locations (the fetch command reads them; runs never download)
HUB_MODEL_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"
HUB_REGRESSION_URL = (
    "https://dl.fbaipublicfiles.com/fair-esm/regression/{name}-contact-regression.pt"
)


def fetch(dest: Path, name: str, revision: str | None, good) -> list[tuple[Path, str]]:
    """fair-esm model ``name``'s checkpoint and contact-regression file into the folder
    ``dest``, each with its source; a file ``good(path, url)`` calls matching is kept."""
    import torch.hub  # looked up at call time: tests replace download_url_to_file

    del revision  # fair-esm's files have no revisions
    out = []
    for url in (HUB_MODEL_URL.format(name=name), HUB_REGRESSION_URL.format(name=name)):
        path = dest / url.rsplit("/", 1)[-1]
        out.append((path, url))
        if good(path, url):
            continue  # there and matching its lock entry: not fetched again
        dest.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.part")
        log.info("fetching %s", url)
        torch.hub.download_url_to_file(url, str(part), progress=True)
        os.replace(part, path)  # a reader never sees a partial checkpoint under the real name
    return out
