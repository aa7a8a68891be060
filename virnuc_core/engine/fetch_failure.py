"""When fetching the models fails: was the hub out of reach, and what the failed fetch leaves.

:func:`cannot_reach` tells "this machine cannot reach the model hub" apart from every other
failure. The hub client (huggingface_hub: requests before 1.0, httpx or httpx2 since) and urllib
(torch.hub, for ESM-2) raise different exceptions when the network is not there, most of them
wrapping the socket's own error; it walks the chain of causes and knows them by class name,
without importing any of those libraries. A full disk or a folder it may not write is not one
of them: those keep their own message.

:func:`clean_failed_fetch` removes what a failed fetch started (``.part`` downloads, folders it
made that stayed empty, the whole models folder when the fetch created it and locked nothing in
it): a folder that was there keeps what it had.
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.error
from pathlib import Path

# (top-level package, class name) of what the hub clients raise when the network is not there,
# matched anywhere in a raised class's MRO.
_UNREACHABLE = {
    # huggingface_hub: no network and no cached copy ("check your internet connection"), or
    # HF_HUB_OFFLINE=1
    ("huggingface_hub", "LocalEntryNotFoundError"),
    ("huggingface_hub", "OfflineModeIsEnabled"),
    ("requests", "ConnectionError"),  # huggingface_hub < 1.0
    ("requests", "Timeout"),
    ("urllib3", "NewConnectionError"),
    ("httpx", "TransportError"),  # huggingface_hub >= 1.0: ConnectError, timeouts, proxy
    ("httpx2", "TransportError"),
    ("httpcore", "NetworkError"),
    ("httpcore2", "NetworkError"),
}


def _chain(exc: BaseException | None, limit: int = 20) -> list[BaseException]:
    """``exc`` and its causes (explicit, else implicit, else urllib's ``reason``), outermost
    first."""
    out: list[BaseException] = []
    while exc is not None and len(out) < limit and exc not in out:
        out.append(exc)
        reason = getattr(exc, "reason", None) if isinstance(exc, urllib.error.URLError) else None
        exc = (
            exc.__cause__
            or exc.__context__
            or (reason if isinstance(reason, BaseException) else None)
        )
    return out


def _network_failure(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return False  # the server answered
    if isinstance(exc, socket.gaierror | ConnectionError | urllib.error.URLError):
        return True  # name lookup failed, refused, reset; urllib's wrapper of those
    return any(
        (cls.__module__.split(".")[0], cls.__name__) in _UNREACHABLE for cls in type(exc).__mro__
    )


def cannot_reach(exc: BaseException) -> str | None:
    """Why the hub could not be reached (the innermost error's words) when ``exc`` or one of its
    causes says so; None for any other failure."""
    chain = _chain(exc)
    if not any(map(_network_failure, chain)):
        return None
    words = str(chain[-1]).strip()
    return words.splitlines()[0] if words else type(chain[-1]).__name__


def unreachable_message(what: str, reason: str, folder: Path, kept: bool) -> str:
    """The one sentence a fetch that cannot reach the hub ends with."""
    rest = " (the models locked there stay: run again, it fetches only the rest)"
    return (
        f"cannot reach the model hub ({what}: {reason}): run this where the machine is online, "
        f"then copy the folder {str(folder)!r} to this machine{rest if kept else ''}"
    )


def topmost_missing(path: str | os.PathLike) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet: what making
    ``path`` creates. None when ``path`` exists."""
    path = Path(path).absolute()
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def clean_failed_fetch(folder: Path, created: Path | None, before: set[str], lock: str) -> bool:
    """Remove what a failed fetch into ``folder`` left half done.

    ``created``: what making the folder created (:func:`topmost_missing`), ``before``: the names
    in the folder before the fetch, ``lock``: the lock file's name. Every ``.part`` download goes
    (in the folder and one level down), and every new subfolder left empty. A folder the fetch
    created goes entirely unless a model was finished and locked in it (the same command then
    fetches only the rest). Returns whether the folder holds a lock after this.
    """
    if created is not None and not (folder / lock).is_file():
        shutil.rmtree(created, ignore_errors=True)
        return False
    if not folder.is_dir():
        return False
    for entry in list(folder.iterdir()):
        if entry.is_dir() and not entry.name.endswith(".part"):
            for inner in entry.glob(".*.part"):
                _remove(inner)
            if entry.name not in before and not any(entry.iterdir()):
                entry.rmdir()
        elif entry.name.startswith(".") and entry.name.endswith(".part"):
            _remove(entry)
    return (folder / lock).is_file()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
