"""The classifier / chunk-length guard, with an injected table of known files (by git blob id)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import warnings

import pytest

from virnuc_core.engine.models.classifier_check import (
    KNOWN_CLASSIFIERS,
    ClassifierMismatchError,
    KnownClassifier,
    UncheckedClassifierWarning,
    check_classifier,
)


def _git_blob(path) -> str:
    if shutil.which("git") is None:
        pytest.skip("needs git")
    out = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True)
    return out.stdout.strip()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def table(tmp_path):
    """Two stand-in 'official' files (an unpickle of either would run code) and their table."""
    marker = tmp_path / "unpickled"
    f300, f500 = tmp_path / "renamed_a.pth", tmp_path / "renamed_b.pth"
    f300.write_bytes(pickle.dumps(_Evil(marker)) + b"300")
    f500.write_bytes(pickle.dumps(_Evil(marker)) + b"500")
    known = {
        _git_blob(f300): KnownClassifier("300_model.pth", 300),
        _git_blob(f500): KnownClassifier("500_model.pth", 500),
    }
    return f300, f500, known, marker


def test_known_file_with_its_own_chunk_length_passes_and_gives_its_sha256(table):
    f300, f500, known, marker = table
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a known, matching file
        assert check_classifier(f300, 300, known) == hashlib.sha256(f300.read_bytes()).hexdigest()
        assert (
            check_classifier(str(f500), 500, known) == hashlib.sha256(f500.read_bytes()).hexdigest()
        )
    assert not marker.exists()  # nothing was unpickled


def test_known_file_with_the_other_chunk_length_is_refused(table):
    f300, f500, known, marker = table
    with pytest.raises(ClassifierMismatchError) as err:
        check_classifier(f300, 500, known)
    msg = str(err.value)
    assert str(f300) in msg and "300_model.pth" in msg and "made for chunk_length 300" in msg
    assert "use 500_model.pth" in msg
    with pytest.raises(ClassifierMismatchError, match="500_model.pth, made for chunk_length 500"):
        check_classifier(f500, 300, known)
    assert not marker.exists()


def test_unknown_file_warns_and_gives_its_sha256(tmp_path, table):
    _, _, known, _ = table
    other = tmp_path / "my_classifier.pth"
    other.write_bytes(b"something else")
    with pytest.warns(UncheckedClassifierWarning, match="cannot be checked") as rec:
        got = check_classifier(other, 300, known)
    assert got == hashlib.sha256(b"something else").hexdigest()
    assert str(other) in str(rec[0].message)


def test_missing_path_is_refused_naming_it(tmp_path):
    with pytest.raises(ClassifierMismatchError, match=str(tmp_path / "nope.pth")):
        check_classifier(tmp_path / "nope.pth", 300)
    with pytest.raises(ClassifierMismatchError, match="not a file"):
        check_classifier(tmp_path, 300)


def test_tiny_and_no_classifier_pass():
    assert check_classifier("tiny", 300) is None
    assert check_classifier(None, 500) is None


def test_default_table_holds_virnucpros_two_classifiers():
    assert KNOWN_CLASSIFIERS["a0b5b85e7c1e44f00cde146d091beb82b2c8e855"].chunk_length == 300
    assert KNOWN_CLASSIFIERS["fc35d5ef9f1f4564eea7036f34f4f8ec6000d33d"].chunk_length == 500
    assert {k.name for k in KNOWN_CLASSIFIERS.values()} == {"300_model.pth", "500_model.pth"}


# ------------------------------------------------------------- damaged bytes, before any job


def _safetensors_classifier(path):
    """A classifier saved as safetensors, as the tiny models' features are wide (96 + 64)."""
    from safetensors.torch import save_file

    from virnuc_core.engine.models.classify import tiny_classifier

    save_file(tiny_classifier(96 + 64, hidden=8).state_dict(), str(path))
    return path.read_bytes()


def test_safetensors_classifier_with_trailing_bytes_is_refused_naming_it(tmp_path):
    from virnuc_core.engine.models.classifier_check import check_readable
    from virnuc_core.util.corrupt import UnreadableModelFileError

    path = tmp_path / "my classifier.safetensors"
    raw = _safetensors_classifier(path)
    check_readable(path)  # intact: passes
    path.write_bytes(raw + b"\0" * 16)  # e.g. a copy appended to, or two downloads in one
    with pytest.raises(UnreadableModelFileError) as err:
        check_readable(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: not a readable model file: the file is corrupt or truncated")
    # the header's 8-byte length and the data after it (the format's own layout)
    data = len(raw) - 8 - int.from_bytes(raw[:8], "little")
    assert f"{data} bytes of data, the file holds {data + 16}" in msg
    assert "Get the classifier file again" in msg


@pytest.mark.workflow
def test_safetensors_classifier_with_trailing_bytes_stops_a_dry_run(tmp_path):
    """Refused at the start of the run (workflow/rules/common.smk), not when predict loads it."""
    from tests.workflow_helpers import run_snakemake, write_config

    path = tmp_path / "classifier.safetensors"
    path.write_bytes(_safetensors_classifier(path) + b"\0" * 16)
    write_config(tmp_path, classifier=str(path))
    proc = run_snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"{path}: not a readable model file: the file is corrupt or truncated" in out
    assert "Job stats" not in out and not (tmp_path / "results").exists()
