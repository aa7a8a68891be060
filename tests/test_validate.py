"""The validation verdicts as plain arithmetic: both thresholds must hold, and agreement counts
the frames whose calls are the same."""

from __future__ import annotations

import numpy as np
import pytest

from virnuc_core.jobs.validate import Comparison, cosine_rows, verdict_agreement


def comparison(cosines, mean=0.999, low=0.99) -> Comparison:
    cos = np.asarray(cosines, dtype=np.float64)
    n = len(cos)
    return Comparison(
        "esm", np.arange(n), [f"f{i}" for i in range(n)], np.full(n, 100), cos, mean, low
    )


def test_one_bad_frame_fails_although_the_mean_passes():
    cmp = comparison([1.0] * 39 + [0.98])
    assert cmp.cosine.mean() >= 0.999  # the mean alone would pass
    assert not cmp.passed
    assert cmp.summary()["passed"] is False
    assert cmp.worst(1) == [("f39", 0.98)]
    assert "min 0.980000 (needs >= 0.99)" in cmp.failure_message()


def test_a_low_mean_fails_although_every_frame_passes_the_minimum():
    cmp = comparison([0.995] * 40)
    assert cmp.cosine.min() >= 0.99  # the minimum alone would pass
    assert not cmp.passed


@pytest.mark.parametrize(
    "cosines,passed", [([1.0] * 40, True), ([0.999, 0.9991, 0.9995], True), ([], True)]
)
def test_both_thresholds_met_passes(cosines, passed):
    assert comparison(cosines).passed is passed


def test_thresholds_are_inclusive():
    assert comparison([0.99, 1.0], mean=0.995, low=0.99).passed
    assert not comparison([0.99, 0.9999], mean=0.995, low=0.99).passed  # mean 0.99495


def test_verdict_agreement_counts_the_same_calls():
    fast = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
    ref = np.array([[0.8, 0.2], [0.1, 0.9], [0.4, 0.6], [0.45, 0.55]], np.float32)
    assert verdict_agreement(fast, ref) == 0.75  # frame 2 is called others, then virus
    assert verdict_agreement(fast, fast) == 1.0
    assert verdict_agreement(fast, fast[:, ::-1]) == 0.0  # every call flipped


def test_cosine_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [0.0, 1.0, -1.0], atol=1e-12)
