"""The models folder: fetched once where the machine is online, locked, verified before runs.

Runs never download. ``virnuc-fetch-models --out models`` (:func:`fetch_models`) fetches each
model into its own subfolder of one folder (DNABERT-S from the Hugging Face hub at a pinned
commit, ESM-2's checkpoint and contact-regression file from fair-esm's URLs) and writes
``models.lock.json`` there: every file's path (relative to the folder), model, source, revision,
size and sha256.

::

    models/
      models.lock.json
      dnabert-s/        config.json, tokenizer.json, pytorch_model.bin or model.safetensors
      esm2/             esm2_t36_3B_UR50D.pt, esm2_t36_3B_UR50D-contact-regression.pt

:func:`verify_models` checks every locked file (present, size, sha256, never online) and raises
one :class:`ModelFilesError` naming each missing or changed file. :func:`resolve_model_spec`
maps a config's model spec to local paths: a hub name to the locked copy, a local path to
itself, ``tiny`` to ``tiny``.

This module knows no model by name: what differs between models (their folder, how a hub name
looks, how it is fetched, whether a commit pins it) comes in as a :class:`ModelSource`, one per
model, which the registry (:mod:`virnuc_core.registry`) holds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virnuc_core.engine import fetch_failure as failure
from virnuc_core.util.digests import sha256_file
from virnuc_core.util.files import atomic_writer

log = logging.getLogger("virnuc.models")

LOCK_NAME = "models.lock.json"
LOCK_FORMAT = 1
FETCH = "virnuc-fetch-models --out {folder}"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

# A fetcher's answer: each file of the model it holds now (fetched, or kept) and its source.
Fetched = list[tuple[Path, str]]


@dataclass(frozen=True)
class ModelSource:
    """Where one model's files come from and where they go in the models folder.

    ``fetch(dest, name, revision, good)`` puts model ``name`` (at ``revision``, for a model a
    commit pins) into the folder ``dest`` and returns every file of it with its source (URL);
    ``good(path, source)`` says a file is there already and matches its lock entry from that
    source (it need not be fetched again). Files are downloaded aside (``.part``) and renamed.
    """

    title: str  # for people: "DNABERT-S"
    where: str  # where it is fetched from, for the message when that cannot be reached
    folder: str  # its subfolder of the models folder
    is_hub_name: Callable[[str], bool]  # does a spec (not a local file) name a published model?
    fetch: Callable[[Path, str, str | None, Callable[[Path, str], bool]], Fetched]
    # the file of the folder a hub name resolves to (name -> file name); None: the folder itself
    weights: Callable[[str], str] | None = None
    # a model a commit pins: the hub's newest commit of model ``name`` (None: not pinned)
    newest_revision: Callable[[str], str] | None = None
    # the fetch command's --<model> NAME option takes another name: its help ("": no option)
    other_names: str = ""

    @property
    def pinned(self) -> bool:
        """Whether a commit pins the model (the fetch command's --<model>-revision)."""
        return self.newest_revision is not None

    def lock_path(self, name: str) -> str:
        """What a hub name ``name`` resolves to, relative to the models folder."""
        return self.folder if self.weights is None else f"{self.folder}/{self.weights(name)}"


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


def is_hub_name(source: ModelSource, spec: str) -> bool:
    """Whether ``spec`` names a published model rather than a local file (which it is not)."""
    if spec == "tiny" or Path(spec).expanduser().exists():
        return False
    return source.is_hub_name(spec)


def resolve_model_spec(
    model: str,
    spec: str,
    models_dir: str | os.PathLike | None,
    source: ModelSource,
    *,
    revision: str | None = None,
) -> str:
    """The local spec a loader gets for the config's ``models.<model>`` (its files: ``source``).

    ``tiny`` -> ``tiny``; a local path -> itself (its files are hashed when loaded); a hub name
    -> its copy in the locked ``models_dir`` (a folder, or one file of it). A hub name without a
    models folder, or one the lock does not hold (another name, another ``revision`` of a model
    a commit pins), raises ModelFilesError saying what to fetch: runs never download. Cheap:
    reads the lock only, hashes nothing.
    """
    if not is_hub_name(source, spec):
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
        flag = f" --{model} {spec}" if source.other_names else ""
        raise ModelFilesError(
            f"models.{model} is {spec!r} but the models folder {models_dir} {held}: fetch it "
            f"({fetch}{flag}) or set models.{model} to what the folder holds."
        )
    if source.pinned and revision and entry.get("revision") != revision:
        raise ModelFilesError(
            f"the config pins {spec} at revision {revision}, but {models_dir} holds "
            f"revision {entry.get('revision')}: fetch that one ({fetch} --{model}-revision "
            f"{revision}) or change the config's revision."
        )
    return str(Path(models_dir) / entry["path"])


# ----------------------------------------------------------------------- fetching (online)


def check_revision(revision: str, title: str) -> str:
    """``revision`` if it is a full commit id; otherwise ModelFilesError saying what to pass."""
    if not _COMMIT.match(revision or ""):
        raise ModelFilesError(
            f"{title} revision {revision!r} is not a 40-hex commit id: a branch or tag can move, "
            "so only a commit pins the model (leave it out to take the hub's newest commit, "
            "which the lock then records)"
        )
    return revision


def pinned_revision(source: ModelSource, name: str, revision: str | None) -> str:
    """The commit to fetch: ``revision`` (checked), or the hub's newest commit of ``name``."""
    if revision is not None:
        return check_revision(revision, source.title)
    return check_revision(source.newest_revision(name), source.title)


def lock_entry(folder: Path, path: Path, model: str, name: str, source: str, revision):
    """The lock's entry of the fetched file ``path`` (hashed here)."""
    return {
        "path": path.relative_to(folder).as_posix(),
        "model": model,
        "name": name,
        "source": source,
        "revision": revision,
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def replace_dir(part: Path, final: Path) -> None:
    """Move the finished download ``part`` to ``final``, replacing an older copy."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    part.rename(final)
    shutil.rmtree(old, ignore_errors=True)


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
    sources: Mapping[str, ModelSource],
    names: Mapping[str, str],
    revisions: Mapping[str, str | None] | None = None,
) -> Path:
    """Fetch every model of ``sources`` (model -> where its files come from), in that order,
    as ``names[model]`` (at commit ``revisions[model]`` for a model a commit pins; None: the
    commit the folder's lock holds, else the hub's newest, resolved to its commit) into
    ``out``; write ``out/models.lock.json`` (which records the commits); return the lock's path.

    Needs the network. A model whose locked files are all there and match (size, sha256) is
    not fetched again, nor is any single file a fetcher finds matching. The lock is rewritten
    after each model, so an interrupted download keeps the models fetched before it. A failed
    fetch leaves no partial download (:mod:`virnuc_core.engine.fetch_failure`); offline, it
    raises ModelFilesError saying so.
    """
    out = Path(out)
    created = failure.topmost_missing(out)
    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(sources.values()))
    step = [f"{first.title} from {first.where}"]  # what was being fetched, for the message
    try:
        return _fetch_into(out, sources, names, revisions or {}, step)
    except BaseException as e:
        kept = failure.clean_failed_fetch(out, created, before, LOCK_NAME)
        reason = failure.cannot_reach(e)
        if reason is None:
            raise
        raise ModelFilesError(failure.unreachable_message(step[0], reason, out, kept)) from None


def _fetch_into(
    out: Path,
    sources: Mapping[str, ModelSource],
    names: Mapping[str, str],
    revisions: Mapping[str, str | None],
    step: list[str],
) -> Path:
    lock = _previous_lock(out)
    wanted = {}
    for model, source in sources.items():  # every commit decided before any download
        step[0] = f"{source.title} from {source.where}"
        rev = None
        if source.pinned:
            held = lock["models"].get(model, {}).get("revision")
            # Repairing a folder keeps its commit unless another one is asked for.
            rev = pinned_revision(source, names[model], revisions.get(model) or held)
        wanted[model] = (names[model], rev)
    for model, (name, rev) in wanted.items():
        source = sources[model]
        before = lock["models"].get(model, {})
        same = before.get("name") == name and before.get("revision") == rev
        old = [e for e in lock["files"] if e["model"] == model] if same else []
        good = {e["path"]: e for e in old if file_problem(out, e) is None}
        if old and len(good) == len(old):
            log.info("%s: %s already there and matching its lock; not fetched", model, name)
            continue
        step[0] = f"{source.title} from {source.where}"

        kept: dict[str, dict] = {}  # the files the fetcher kept as they were: not hashed again

        def matches(path: Path, url: str, good=good, kept=kept) -> bool:
            rel = path.relative_to(out).as_posix()
            if rel in good and good[rel]["source"] == url:
                kept[rel] = good[rel]
            return rel in kept

        entries = [
            kept.get(path.relative_to(out).as_posix())
            or lock_entry(out, path, model, name, url, rev)
            for path, url in source.fetch(out / source.folder, name, rev, matches)
        ]
        lock["models"][model] = {"name": name, "revision": rev, "path": source.lock_path(name)}
        lock["files"] = [e for e in lock["files"] if e["model"] != model] + entries
        write_lock(out, lock)
    return out / LOCK_NAME
