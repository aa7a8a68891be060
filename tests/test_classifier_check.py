"""The classifier / chunk-length guard, with an injected table of known files (by git blob id)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import warnings

import pytest

from virnuc_core.classifier_check import (
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
