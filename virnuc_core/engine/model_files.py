"""The models folder: fetched once where the machine is online, locked, verified before runs.

Runs never download. ``virnuc-fetch-models --out models`` (:func:`fetch_models`)
fetches DNABERT-S from the Hugging Face hub at a pinned commit and ESM-2's checkpoint and
contact-regression file from fair-esm's URLs into one folder, and writes ``models.lock.json``
there: every file's path (relative to the folder), model, source, revision, size and sha256.

::

    models/
      models.lock.json
      dnabert-s/        config.json, tokenizer.json, pytorch_model.bin or model.safetensors
      esm2/             esm2_t36_3B_UR50D.pt, esm2_t36_3B_UR50D-contact-regression.pt

:func:`verify_models` checks every locked file (present, size, sha256, never online) and raises
one :class:`ModelFilesError` naming each missing or changed file. :func:`resolve_model_spec`
maps the config's model specs to local paths: a hub name to the locked copy, a local path to
itself, ``tiny`` to ``tiny``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from virnuc_core.engine import fetch_failure as failure
from virnuc_core.util.digests import sha256_file
from virnuc_core.util.files import atomic_writer

log = logging.getLogger("virnuc.models")

LOCK_NAME = "models.lock.json"
LOCK_FORMAT = 1
DNABERT_S_REPO = "zhihan1996/DNABERT-S"
# Which DNABERT-S commit the fetch takes when none is given: the hub's newest ("main"), resolved
# to its 40-hex commit id at fetch time and recorded in the lock, which pins it from then on.
DEFAULT_BRANCH = "main"
ESM2_NAME = "esm2_t36_3B_UR50D"
DNABERT_DIR, ESM_DIR = "dnabert-s", "esm2"
# What DNABERT-S needs from the hub (no remote code, no tokenizer_config: see dnabert_load)
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
FETCH = "virnuc-fetch-models --out {folder}"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# fair-esm's download locations (the fetch command reads them; runs never download)
HUB_MODEL_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"
HUB_REGRESSION_URL = (
    "https://dl.fbaipublicfiles.com/fair-esm/regression/{name}-contact-regression.pt"
)


class ModelFilesError(RuntimeError):
    """The models folder or a model spec cannot be used as it is; the message says what to do."""


# -------------------------------------------------------------------------------- the lock


def read_lock(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's lock (``{"format", "models", "files"}``); raises ModelFilesError if absent."""
    path = Path(folder) / LOCK_NAME
    fetch = FETCH.format(folder=folder)
    if not path.is_file():
        raise ModelFilesError(
            f"{folder}: no {LOCK_NAME}, so this is not a fetched models folder. Fetch the models "
            f"once, on a machine that is online: {fetch}"
        )
    try:
        lock = json.loads(path.read_text())
        if lock.get("format") != LOCK_FORMAT or not isinstance(lock.get("files"), list):
            raise ValueError(f"format {lock.get('format')!r}, expected {LOCK_FORMAT}")
        for entry in lock["files"]:
            _ = entry["path"], entry["model"], int(entry["size"]), str(entry["sha256"])
        _ = {name: m["name"] for name, m in lock["models"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelFilesError(
            f"{path}: not a readable lock file ({e}). Fetch the models again: {fetch}"
        ) from None
    return lock


def write_lock(folder: str | os.PathLike, lock: dict[str, Any]) -> Path:
    """Write ``lock`` as the folder's lock file, atomically, files sorted by path."""
    path = Path(folder) / LOCK_NAME
    lock = {**lock, "format": LOCK_FORMAT, "files": sorted(lock["files"], key=lambda e: e["path"])}
    with atomic_writer(path) as out:
        json.dump(lock, out, indent=2, sort_keys=True)
        out.write("\n")
    return path


def file_problem(folder: Path, entry: dict[str, Any]) -> str | None:
    """Why the locked file ``entry`` does not match what is on disk, or None when it does."""
    path = folder / entry["path"]
    if not path.is_file():
        return f"{entry['path']}: missing" if not path.exists() else f"{entry['path']}: not a file"
    size = path.stat().st_size
    if size != entry["size"]:
        return (
            f"{entry['path']}: size changed ({size} bytes, locked {entry['size']}): "
            "truncated or replaced"
        )
    digest = sha256_file(path)  # size first: a truncated 11 GB file is caught without hashing
    if digest != entry["sha256"]:
        return f"{entry['path']}: content changed (sha256 {digest}, locked {entry['sha256']})"
    return None


def quick_check(folder: str | os.PathLike) -> None:
    """Every locked file there with its locked size (no hashing: cheap enough for every
    Snakemake start); raises one ModelFilesError naming each file that is not."""
    folder = Path(folder)
    problems = []
    for entry in read_lock(folder)["files"]:
        path = folder / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{entry['path']}: size changed (truncated or replaced)")
    if problems:
        raise ModelFilesError(
            f"{folder}: locked model files do not match the lock:\n  "
            + "\n  ".join(problems)
            + f"\nFetch them again: {FETCH.format(folder=folder)}, or restore the folder."
        )


def verify_models(folder: str | os.PathLike) -> dict[str, Any]:
    """Check every file of the folder's lock (exists, size, full sha256); never goes online.

    Returns the lock. Raises one :class:`ModelFilesError` naming every missing or changed file
    and what to do. Reads every byte once (sha256 in 8 MiB blocks): about the time the models
    take to load anyway.
    """
    folder = Path(folder)
    lock = read_lock(folder)
    problems = [p for e in lock["files"] if (p := file_problem(folder, e))]
    if problems:
        raise ModelFilesError(
            f"{folder}: {len(problems)} of the {len(lock['files'])} locked model files do not "
            "match the lock:\n  "
            + "\n  ".join(problems)
            + f"\nFetch them again (only what is missing or changed is fetched): "
            f"{FETCH.format(folder=folder)}\nor restore the folder from your copy of it."
        )
    log.info("%s: all %d locked model files match", folder, len(lock["files"]))
    return lock


def locked_paths(folder: str | os.PathLike) -> list[Path]:
    """Every file the folder's lock lists (e.g. as the inputs of a verification rule)."""
    return [Path(folder) / e["path"] for e in read_lock(folder)["files"]]


def _lock_of(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """(folder, lock entry) of ``path`` when a lock one or two levels up lists it."""
    path = path.resolve()
    for folder in (path.parent, path.parent.parent):
        if (folder / LOCK_NAME).is_file():
            rel = path.relative_to(folder).as_posix()
            for entry in read_lock(folder)["files"]:
                if entry["path"] == rel:
                    return folder, entry
    return None


def check_against_lock(path: str | os.PathLike, sha256: str) -> None:
    """Raise if ``path`` lies in a locked models folder whose lock records another sha256.

    The loaders hash each weights file as they read it; this makes every load a verification
    of that file, at no extra read.
    """
    found = _lock_of(Path(path))
    if found and found[1]["sha256"] != sha256:
        folder, entry = found
        raise ModelFilesError(
            f"{path}: content changed (sha256 {sha256}, locked {entry['sha256']} in "
            f"{folder / LOCK_NAME}). Fetch it again: {FETCH.format(folder=folder)}, or restore "
            "the folder from your copy of it."
        )


# ------------------------------------------------------------------------ specs to paths


def is_hub_name(model: str, spec: str) -> bool:
    """Whether ``spec`` names a published model rather than a local file (which it is not)."""
    if spec == "tiny" or Path(spec).expanduser().exists():
        return False
    if model == "esm":
        return spec.startswith("esm2_") and "/" not in spec and not spec.endswith(".pt")
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~"))


def resolve_model_spec(
    model: str,
    spec: str,
    models_dir: str | os.PathLike | None = None,
    *,
    dnabert_revision: str | None = None,
) -> str:
    """The local spec a loader gets for the config's ``models.<model>`` (``dnabert`` / ``esm``).

    ``tiny`` -> ``tiny``; a local path -> itself (its files are hashed when loaded); a hub name
    (``zhihan1996/DNABERT-S``, ``esm2_t36_3B_UR50D``) -> its copy in the locked ``models_dir``
    (the DNABERT-S folder, the ESM-2 ``.pt``). A hub name without a models folder, or one the
    lock does not hold (another name, another DNABERT-S revision), raises ModelFilesError
    saying what to fetch: runs never download. Cheap: reads the lock only, hashes nothing.
    """
    if model not in ("dnabert", "esm"):
        raise ValueError(f"model must be 'dnabert' or 'esm', got {model!r}")
    if not is_hub_name(model, spec):
        return spec
    if models_dir is None:
        raise ModelFilesError(
            f"models.{model} is the hub name {spec!r}, and runs never download: fetch the models "
            f"once, on a machine that is online ({FETCH.format(folder='models')}), then set the "
            "models folder in the config to that folder (or give a local path instead)."
        )
    entry = read_lock(models_dir)["models"].get(model)
    fetch = FETCH.format(folder=models_dir)
    if entry is None or entry["name"] != spec:
        held = f"holds {entry['name']!r}" if entry else "holds no such model"
        flag = f" --esm {spec}" if model == "esm" else ""
        raise ModelFilesError(
            f"models.{model} is {spec!r} but the models folder {models_dir} {held}: fetch it "
            f"({fetch}{flag}) or set models.{model} to what the folder holds."
        )
    if model == "dnabert" and dnabert_revision and entry.get("revision") != dnabert_revision:
        raise ModelFilesError(
            f"the config pins {spec} at revision {dnabert_revision}, but {models_dir} holds "
            f"revision {entry.get('revision')}: fetch that one ({fetch} --dnabert-revision "
            f"{dnabert_revision}) or change the config's revision."
        )
    return str(Path(models_dir) / entry["path"])


# ----------------------------------------------------------------------- fetching (online)


def check_revision(revision: str) -> str:
    """``revision`` if it is a full commit id; otherwise ModelFilesError saying what to pass."""
    if not _COMMIT.match(revision or ""):
        raise ModelFilesError(
            f"DNABERT-S revision {revision!r} is not a 40-hex commit id: a branch or tag can move, "
            "so only a commit pins the model (leave it out to take the hub's newest commit, "
            "which the lock then records)"
        )
    return revision


def pinned_revision(revision: str | None) -> str:
    """The commit to fetch: ``revision`` (checked), or the hub's current ``main`` commit."""
    if revision is not None:
        return check_revision(revision)
    import huggingface_hub  # looked up at call time: tests replace model_info

    commit = huggingface_hub.model_info(DNABERT_S_REPO, revision=DEFAULT_BRANCH).sha
    log.info("%s: %s is commit %s", DNABERT_S_REPO, DEFAULT_BRANCH, commit)
    return check_revision(commit)


def _entry(folder: Path, path: Path, model: str, name: str, source: str, revision: str | None):
    return {
        "path": path.relative_to(folder).as_posix(),
        "model": model,
        "name": name,
        "source": source,
        "revision": revision,
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def _replace_dir(part: Path, final: Path) -> None:
    """Move the finished download ``part`` to ``final``, replacing an older copy."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    part.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _fetch_dnabert(folder: Path, revision: str) -> list[dict[str, Any]]:
    """DNABERT-S at ``revision`` into ``folder/dnabert-s`` (downloaded aside, then renamed)."""
    import huggingface_hub  # looked up at call time: tests replace snapshot_download

    part, final = folder / f".{DNABERT_DIR}.part", folder / DNABERT_DIR
    log.info("fetching %s at %s", DNABERT_S_REPO, revision)
    huggingface_hub.snapshot_download(
        repo_id=DNABERT_S_REPO,
        revision=revision,
        allow_patterns=DNABERT_PATTERNS,
        local_dir=part,
    )
    shutil.rmtree(part / ".cache", ignore_errors=True)  # the hub client's resume notes
    names = {p.name for p in part.iterdir()}
    weights = {"model.safetensors", "pytorch_model.bin"} | {n for n in names if "index" in n}
    missing = [n for n in ("config.json", "tokenizer.json") if n not in names]
    if missing or not names & weights:
        raise ModelFilesError(
            f"{DNABERT_S_REPO} at {revision} lacks {missing or 'weights'}: is it the right "
            f"revision? (got {sorted(names)})"
        )
    _replace_dir(part, final)
    source = f"https://huggingface.co/{DNABERT_S_REPO}"
    files = sorted(p for p in final.rglob("*") if p.is_file())
    return [_entry(folder, p, "dnabert", DNABERT_S_REPO, source, revision) for p in files]


def _fetch_esm(folder: Path, name: str, good: dict[str, dict]) -> list[dict[str, Any]]:
    """The ESM-2 checkpoint and its contact-regression file; files in ``good`` are kept."""
    import torch.hub  # looked up at call time: tests replace download_url_to_file

    entries = []
    for url in (HUB_MODEL_URL.format(name=name), HUB_REGRESSION_URL.format(name=name)):
        dest = folder / ESM_DIR / url.rsplit("/", 1)[-1]
        rel = dest.relative_to(folder).as_posix()
        if rel in good and good[rel]["source"] == url:
            entries.append(good[rel])  # there and matching its lock entry: not fetched again
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part")
        log.info("fetching %s", url)
        torch.hub.download_url_to_file(url, str(part), progress=True)
        os.replace(part, dest)  # a reader never sees a partial checkpoint under the real name
        entries.append(_entry(folder, dest, "esm", name, url, None))
    return entries


def _previous_lock(folder: Path) -> dict[str, Any]:
    if not (folder / LOCK_NAME).is_file():
        return {"format": LOCK_FORMAT, "models": {}, "files": []}
    try:
        return read_lock(folder)
    except ModelFilesError as e:
        log.warning("%s; fetching everything again", e)
        return {"format": LOCK_FORMAT, "models": {}, "files": []}


def fetch_models(
    out: str | os.PathLike,
    *,
    dnabert_revision: str | None = None,
    esm_name: str = ESM2_NAME,
) -> Path:
    """Fetch DNABERT-S (at commit ``dnabert_revision``; None: the hub's newest, resolved to its
    commit) and ESM-2 ``esm_name`` into ``out``; write ``out/models.lock.json`` (which records
    the commit); return the lock's path.

    Needs the network. A model whose locked files are all there and match (size, sha256) is
    not fetched again, nor is any single ESM-2 file that matches. The lock is rewritten after
    each model, so an interrupted ESM-2 download keeps DNABERT-S's entries. A failed fetch
    leaves no partial download (:mod:`virnuc_core.engine.fetch_failure`); offline, it raises
    ModelFilesError saying so.
    """
    out = Path(out)
    created = failure.topmost_missing(out)
    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    out.mkdir(parents=True, exist_ok=True)
    step = ["DNABERT-S from the Hugging Face hub"]  # what was being fetched, for the message
    try:
        return _fetch_into(out, dnabert_revision, esm_name, step)
    except BaseException as e:
        kept = failure.clean_failed_fetch(out, created, before, LOCK_NAME)
        reason = failure.cannot_reach(e)
        if reason is None:
            raise
        raise ModelFilesError(failure.unreachable_message(step[0], reason, out, kept)) from None


def _fetch_into(out: Path, dnabert_revision: str | None, esm_name: str, step: list[str]) -> Path:
    lock = _previous_lock(out)
    held = lock["models"].get("dnabert", {}).get("revision")
    # Repairing a folder keeps its commit unless another one is asked for.
    revision = pinned_revision(dnabert_revision or held)
    wanted = {
        "dnabert": (DNABERT_S_REPO, revision, DNABERT_DIR),
        "esm": (esm_name, None, f"{ESM_DIR}/{esm_name}.pt"),
    }
    for model, (name, rev, path) in wanted.items():
        before = lock["models"].get(model, {})
        same = before.get("name") == name and before.get("revision") == rev
        old = [e for e in lock["files"] if e["model"] == model] if same else []
        good = {e["path"]: e for e in old if file_problem(out, e) is None}
        if old and len(good) == len(old):
            log.info("%s: %s already there and matching its lock; not fetched", model, name)
            continue
        if model == "dnabert":
            entries = _fetch_dnabert(out, revision)
        else:
            step[0] = "ESM-2 from fair-esm's download server"
            entries = _fetch_esm(out, name, good)
        lock["models"][model] = {"name": name, "revision": rev, "path": path}
        lock["files"] = [e for e in lock["files"] if e["model"] != model] + entries
        write_lock(out, lock)
    return out / LOCK_NAME
