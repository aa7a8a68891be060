"""What a failed step tells the user (virnuc_core.jobs.step.run_step): a full disk is not a bug."""

from __future__ import annotations

import errno
import io
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

import virnuc_core.util.files
from virnuc_core.jobs.step import run_step
from virnuc_core.report.predictions import write_predictions


def run(tmp_path: Path, main, capsys) -> tuple[int, str, str]:
    """Run ``main`` as a step does; (exit code, console, log file)."""
    log = tmp_path / "step.log"
    sm = SimpleNamespace(rule="predict", log=[str(log)], threads=1)
    with pytest.raises(SystemExit) as stop:
        run_step(sm, main)
    return stop.value.code, capsys.readouterr().err, log.read_text()


class FullDisk(io.StringIO):
    """A file whose writes fail as on a full disk (a plain write's error names no file)."""

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_names_the_output_and_says_what_to_do(tmp_path, capsys, monkeypatch):
    real_open = open
    monkeypatch.setattr(
        virnuc_core.util.files, "open",
        lambda path, mode="r": FullDisk() if "w" in mode else real_open(path, mode),
        raising=False,
    )  # fmt: skip
    out = tmp_path / "prediction_results.tsv"
    scores = np.array([[0.2, 0.8]], np.float32)
    code, console, log = run(
        tmp_path,
        lambda sm: write_predictions(["r_chunk_1F1"], scores, out, tmp_path / "high.tsv"),
        capsys,
    )
    assert code == 1
    expected = (
        f"rule predict: no space left on device while writing {str(out)!r}: free space and run "
        "the same command again"
    )
    assert expected in console and expected in log
    assert "a bug" not in console and "Traceback" not in console
    assert not out.exists()


def test_full_disk_under_hdf5_names_the_file(tmp_path, capsys):
    def main(sm):  # /dev/full: every write fails with ENOSPC, as on a full disk
        with h5py.File("/dev/full", "w") as f:
            f["embeddings"] = np.zeros((64, 64), np.float32)

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    code, console, _ = run(tmp_path, main, capsys)
    assert code == 1
    assert (
        "rule predict: no space left on device while writing '/dev/full': free space and run "
        "the same command again"
    ) in console
    assert "a bug" not in console and "Traceback" not in console


def test_quota_exceeded_is_told_as_such(tmp_path, capsys):
    def main(sm):
        raise OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp_path / "x.h5"))

    code, console, _ = run(tmp_path, main, capsys)
    assert code == 1
    assert (
        f"disk quota exceeded while writing {str(tmp_path / 'x.h5')!r}: free space and run the "
        "same command again"
    ) in console


def test_other_os_errors_stay_bugs(tmp_path, capsys):
    def main(sm):
        raise OSError(errno.EIO, "Input/output error", "somewhere")

    code, console, _ = run(tmp_path, main, capsys)
    assert code == 1
    assert "failed (a bug: please report it)" in console


def test_a_full_disk_writing_another_file_keeps_that_files_name(tmp_path):
    """Inside an atomic_path block, a disk-full error that names another file (a log, say) is
    not renamed to the block's output."""
    log = tmp_path / "job.log"
    with pytest.raises(OSError) as caught, virnuc_core.util.files.atomic_path(tmp_path / "out.tsv"):
        raise OSError(errno.ENOSPC, "No space left on device", str(log))
    assert caught.value.filename == str(log)
    with pytest.raises(OSError) as caught, virnuc_core.util.files.atomic_path(tmp_path / "out.tsv"):
        raise OSError(errno.ENOSPC, "No space left on device")  # a plain write names no file
    assert caught.value.filename == str(tmp_path / "out.tsv")
