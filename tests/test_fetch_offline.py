"""virnuc-fetch-models where the model hub cannot be reached: one sentence, exit 1, no
traceback, and no empty or half-fetched folder left behind.

No network: the download functions are replaced by ones that raise what the hub client
(huggingface_hub, over requests or httpx) and urllib (torch.hub, for ESM-2) raise offline,
each wrapping the socket's name-lookup error as the real ones do.
"""

from __future__ import annotations

import errno
import json
import socket
import urllib.error
from pathlib import Path

import pytest

pytest.importorskip("esm")
huggingface_hub = pytest.importorskip("huggingface_hub")

from tests import test_model_files  # noqa: E402
from tests.model_fixtures import FakeHub  # noqa: E402
from virnuc_core.commands import fetch_models_main  # noqa: E402
from virnuc_core.engine.fetch_failure import cannot_reach  # noqa: E402
from virnuc_core.engine.model_files import LOCK_NAME, ModelFilesError  # noqa: E402
from virnuc_core.registry import fetch_models  # noqa: E402

REV = test_model_files.REV
remote = test_model_files.remote  # the fixture: what the fake hub serves
SENTENCE = "run this where the machine is online, then copy the folder"
NO_NAME = "[Errno -2] Name or service not known"


def _gaierror() -> socket.gaierror:
    return socket.gaierror(-2, "Name or service not known")


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def _hub_offline() -> BaseException:
    """What snapshot_download raises offline with nothing cached (huggingface_hub 0.2x to 2.x)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    msg = "An error happened while trying to locate the files on the Hub ... check your internet"
    return _caused(LocalEntryNotFoundError(msg), _caused(ConnectionError(NO_NAME), _gaierror()))


def _requests_offline() -> BaseException:
    """What huggingface_hub < 1.0 lets through from requests (model_info, offline)."""
    requests = pytest.importorskip("requests")
    return _caused(requests.exceptions.ConnectionError("Max retries exceeded"), _gaierror())


def _httpx_offline() -> BaseException:
    """What huggingface_hub >= 1.0 lets through from httpx (model_info, offline)."""
    try:
        import httpx2 as httpx
    except ImportError:
        httpx = pytest.importorskip("httpx")
    return _caused(httpx.ConnectError(NO_NAME), _gaierror())


def _httpx_timeout() -> BaseException:
    """A firewall that drops packets: httpx's ConnectTimeout over the socket's timeout."""
    try:
        import httpx2 as httpx
    except ImportError:
        httpx = pytest.importorskip("httpx")
    return _caused(httpx.ConnectTimeout("timed out"), TimeoutError("timed out"))


def _offline_mode() -> BaseException:
    from huggingface_hub.errors import OfflineModeIsEnabled

    return OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")


def _urllib_offline() -> BaseException:
    """What torch.hub.download_url_to_file raises offline (urllib's urlopen)."""
    return urllib.error.URLError(_gaierror())


OFFLINE = {
    "hub": _hub_offline,
    "requests": _requests_offline,
    "httpx": _httpx_offline,
    "httpx-timeout": _httpx_timeout,
    "offline-mode": _offline_mode,
    "urllib": _urllib_offline,
}


def _run_script(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    del monkeypatch  # the command's entry point takes its arguments
    code = fetch_models_main(list(args))  # any exception: a traceback, fails the test
    out = capsys.readouterr()
    return code, out.out, out.err


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def _failing_snapshot(exc: BaseException):
    """A snapshot_download that starts the download (a partial file, the client's notes) and
    then fails with ``exc``."""

    def snapshot_download(repo_id, *, revision=None, allow_patterns=None, local_dir=None):
        notes = Path(local_dir) / ".cache" / "huggingface" / "download"
        notes.mkdir(parents=True)
        (notes / "pytorch_model.bin.incomplete").write_bytes(b"\0" * 100)
        (Path(local_dir) / "config.json").write_text("{}")
        raise exc

    return snapshot_download


def _failing_download(exc: BaseException):
    """A download_url_to_file that writes part of the file, then fails with ``exc``."""

    def download_url_to_file(url, dst, hash_prefix=None, progress=True):
        Path(dst).write_bytes(b"PK\3\4partial")
        raise exc

    return download_url_to_file


@pytest.mark.parametrize("kind", sorted(OFFLINE))
def test_offline_fetch_says_so_and_removes_the_folder_it_made(tmp_path, monkeypatch, capsys, kind):
    exc = OFFLINE[kind]()
    fail = _failing_snapshot(exc)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: (_ for _ in ()).throw(exc))
    out = tmp_path / "new" / "models"
    # without a revision the hub is asked for its newest commit first (model_info)
    for args in ([], ["--dnabert-revision", REV]):
        code, stdout, err = _run_script(monkeypatch, capsys, "--out", str(out), *args)
        assert code == 1 and "Traceback" not in err + stdout
        last = err.strip().splitlines()[-1]  # the one line that says what to do
        assert last.startswith("error: cannot reach the model hub (DNABERT-S from the Hugging")
        assert last.endswith(f"{SENTENCE} '{out}' to this machine")
        assert not (tmp_path / "new").exists()  # everything the fetch made is gone


def test_offline_fetch_leaves_a_folder_that_was_there_as_it_was(tmp_path, monkeypatch, capsys):
    out = tmp_path / "models"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "mine.txt").write_text("the user's\n")
    (out / "esm2").mkdir()  # there before (empty): stays
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _failing_snapshot(_hub_offline()))
    code, _, err = _run_script(monkeypatch, capsys, "--out", str(out), "--dnabert-revision", REV)
    assert code == 1 and "cannot reach the model hub (DNABERT-S" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "esm2", "notes", "notes/mine.txt"
    ]  # fmt: skip


def test_offline_repair_of_a_fetched_folder_changes_nothing(tmp_path, monkeypatch, capsys, remote):
    FakeHub(*remote).install(monkeypatch)
    out = tmp_path / "models"
    fetch_models(out, revisions={"dnabert": REV})
    regression = next(out.glob("esm2/*-contact-regression.pt"))
    regression.unlink()  # the repair fetches this one file again
    before = _tree(out)
    import torch.hub

    monkeypatch.setattr(torch.hub, "download_url_to_file", _failing_download(_urllib_offline()))
    code, _, err = _run_script(monkeypatch, capsys, "--out", str(out), "--dnabert-revision", REV)
    assert code == 1 and "cannot reach the model hub (ESM-2" in err
    assert _tree(out) == before  # no .part beside the checkpoint, the lock as it was


def test_offline_during_esm_keeps_the_locked_dnabert(tmp_path, monkeypatch, capsys, remote):
    """DNABERT-S fetched and locked, then ESM-2's server out of reach: the new folder stays with
    DNABERT-S alone (a second run fetches only ESM-2), nothing of ESM-2 in it."""
    FakeHub(*remote).install(monkeypatch)
    import torch.hub

    monkeypatch.setattr(torch.hub, "download_url_to_file", _failing_download(_urllib_offline()))
    out = tmp_path / "models"
    code, _, err = _run_script(monkeypatch, capsys, "--out", str(out), "--dnabert-revision", REV)
    assert code == 1 and "cannot reach the model hub (ESM-2" in err and "run again" in err
    lock = json.loads((out / LOCK_NAME).read_text())
    assert list(lock["models"]) == ["dnabert"]
    assert {p.name for p in out.iterdir()} == {LOCK_NAME, "dnabert-s"}


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied"),
        urllib.error.HTTPError("https://x/esm.pt", 404, "Not Found", {}, None),
    ],
    ids=["disk-full", "permission", "http-404"],
)
def test_other_failures_keep_their_own_error_and_still_clean_up(tmp_path, monkeypatch, exc):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _failing_snapshot(exc))
    out = tmp_path / "models"
    with pytest.raises(type(exc)) as raised:
        fetch_models(out, revisions={"dnabert": REV})
    assert raised.value is exc and not isinstance(raised.value, ModelFilesError)
    assert not out.exists()


@pytest.mark.parametrize("kind", sorted(OFFLINE))
def test_cannot_reach_names_the_innermost_reason(kind):
    special = {"offline-mode": "offline mode is enabled.", "httpx-timeout": "timed out"}
    assert cannot_reach(OFFLINE[kind]()).endswith(special.get(kind, NO_NAME))


def test_cannot_reach_is_none_for_failures_that_are_not_the_network():
    for exc in (
        FileNotFoundError(errno.ENOENT, "No such file", "x"),
        OSError(errno.ENOSPC, "No space left on device"),
        urllib.error.HTTPError("https://x", 500, "Server Error", {}, None),
        ValueError("bad checkpoint"),
        _caused(RuntimeError("outer"), KeyError("inner")),
    ):
        assert cannot_reach(exc) is None, exc
