"""Tests of virnuc_core.engine.models.classify: safe loading of the users' pickled MLP, scores,
verdict files."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from virnuc_core.engine.models.classify import (
    ClassifierFormatError,
    UnreadableModelFileError,
    UnsafeClassifierError,
    classifier_for,
    load_classifier,
    predict_scores,
    save_state,
    tiny_classifier,
)
from virnuc_core.report.predictions import ChunkMaxima, PredictionWriter, write_predictions

# A training script in the original's style, run as __main__, so that the pickles name
# __main__.MLPClassifier exactly as the users' 300_model.pth / 500_model.pth do.
MAKE_ORIGINAL = textwrap.dedent(
    """
    import os, subprocess, sys
    import numpy as np
    import torch
    from torch import nn
    import torch.nn.functional as F

    class MLPClassifier(nn.Module):
        def __init__(self, input_dim, hidden_dim, num_class):
            super(MLPClassifier, self).__init__()
            self.hidden_layer = nn.Linear(input_dim, hidden_dim)
            self.bn1 = nn.BatchNorm1d(hidden_dim)
            self.output_layer = nn.Linear(hidden_dim, num_class)
            self.dropout = nn.Dropout(0.5)
            nn.init.xavier_uniform_(self.hidden_layer.weight)
            nn.init.xavier_uniform_(self.output_layer.weight)

        def forward(self, x):
            x = self.hidden_layer(x)
            x = self.bn1(x)
            x = F.relu(x)
            x = self.dropout(x)
            x = self.output_layer(x)
            return x

    class Evil:
        def __init__(self, func, args):
            self.func, self.args = func, args
        def __reduce__(self):
            return (self.func, self.args)

    def make(in_dim, hidden, seed):
        torch.manual_seed(seed)
        m = MLPClassifier(in_dim, hidden, 2)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
            m.bn1.running_mean.copy_(0.3 * torch.randn(hidden))
            m.bn1.running_var.copy_(0.2 + torch.rand(hidden))
            m.bn1.num_batches_tracked.fill_(1234)
        m.train()  # saved as training left it; the loader must not care
        return m

    def reference(m, x):
        m.eval()
        with torch.no_grad():
            return F.softmax(m(torch.from_numpy(x)), dim=1).numpy()

    out, marker = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(7)
    for tag, in_dim, hidden in (("small", 768 + 16, 8), ("full", 3328, 512)):
        m = make(in_dim, hidden, seed=in_dim)
        x = rng.standard_normal((37, in_dim)).astype(np.float32)
        np.save(f"{out}/{tag}_x.npy", x)
        np.save(f"{out}/{tag}_ref.npy", reference(m, x))
        torch.save(m, f"{out}/{tag}_model.pth")
    m = make(768 + 16, 8, seed=1)
    np.save(f"{out}/legacy_ref.npy", reference(m, np.load(f"{out}/small_x.npy")))
    torch.save(m, f"{out}/legacy_model.pth", _use_new_zipfile_serialization=False)
    torch.save(m.state_dict(), f"{out}/plain_state.pth")
    np.save(f"{out}/plain_ref.npy", reference(m, np.load(f"{out}/small_x.npy")))

    # Harmful files: each names a callable that would create the marker file if it ran.
    touch = f"touch {marker}"
    torch.save(Evil(os.system, (touch,)), f"{out}/evil_system.pth")
    torch.save(Evil(exec, (f"open({marker!r}, 'w').close()",)), f"{out}/evil_exec.pth")
    torch.save(Evil(subprocess.Popen, (["touch", marker],)), f"{out}/evil_popen.pth")
    torch.save(
        Evil(os.system, (touch,)), f"{out}/evil_legacy.pth", _use_new_zipfile_serialization=False
    )
    m = make(768 + 16, 8, seed=2)
    m.extra = Evil(os.system, (touch,))  # buried inside an otherwise genuine module
    torch.save(m, f"{out}/evil_inside.pth")
    m = make(768 + 16, 8, seed=3)
    m.register_forward_hook(print)  # a hook is a callable too
    torch.save(m, f"{out}/evil_hook.pth")
    # A global from a module that would run code on import (it is importable from PROBE_DIR).
    import virnuc_probe_module
    torch.save(Evil(virnuc_probe_module.harmless, ()), f"{out}/evil_import.pth")
    """
)

PROBE_MODULE = textwrap.dedent(
    """
    import os
    if os.environ.get("VIRNUC_PROBE_QUIET") != "1":
        open(os.environ.get("VIRNUC_PROBE_MARKER", "/tmp/virnuc_probe_imported"), "w").close()

    def harmless():
        return None
    """
)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Run the original-style script once; return (folder, marker path, probe folder)."""
    root = tmp_path_factory.mktemp("classify")
    out = root / "out"
    out.mkdir()
    probe_dir = root / "probe"
    probe_dir.mkdir()
    (probe_dir / "virnuc_probe_module.py").write_text(PROBE_MODULE)
    script = root / "train_like.py"
    script.write_text(MAKE_ORIGINAL)
    marker = root / "pwned"
    env = dict(os.environ, PYTHONPATH=str(probe_dir), VIRNUC_PROBE_QUIET="1")
    subprocess.run(
        [sys.executable, str(script), str(out), str(marker)],
        check=True,
        env=env,
        cwd=root,
        timeout=120,
    )
    assert not marker.exists()
    return out, marker, probe_dir


# ----------------------------------------------------------------------------------------------
# Loading the original's whole-module pickles


@pytest.mark.parametrize("tag,dim", [("small", 768 + 16), ("full", 3328)])
def test_original_module_pickle_matches_reference(made, tag, dim):
    out, _, _ = made
    model = load_classifier(out / f"{tag}_model.pth", expected_dim=dim)
    assert not model.training
    assert model.input_dim == dim
    scores = predict_scores(model, np.load(out / f"{tag}_x.npy"))
    ref = np.load(out / f"{tag}_ref.npy")
    assert scores.dtype == np.float32 and scores.shape == ref.shape
    assert np.max(np.abs(scores - ref)) < 1e-6
    assert int(model.bn1.num_batches_tracked) == 1234


def test_legacy_format_and_plain_state_dict(made):
    out, _, _ = made
    x = np.load(out / "small_x.npy")
    for name, ref in (("legacy_model.pth", "legacy_ref.npy"), ("plain_state.pth", "plain_ref.npy")):
        model = load_classifier(out / name, expected_dim=768 + 16)
        assert np.max(np.abs(predict_scores(model, x) - np.load(out / ref))) < 1e-6


def test_model_saved_on_gpu_loads_on_cpu(made, tmp_path):
    """The users' files were saved from CUDA: storage location 'cuda:0' in the pickle."""
    out, _, _ = made
    src = zipfile.ZipFile(out / "small_model.pth")
    with zipfile.ZipFile(tmp_path / "cuda.pth", "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            dst.writestr(info.filename, data)
    model = load_classifier(tmp_path / "cuda.pth", expected_dim=768 + 16)
    assert model.hidden_layer.weight.device.type == "cpu"
    scores = predict_scores(model, np.load(out / "small_x.npy"))
    assert np.max(np.abs(scores - np.load(out / "small_ref.npy"))) < 1e-6


def test_save_state_round_trip(tmp_path):
    model = tiny_classifier(768 + 16, hidden=8, seed=3)
    save_state(model, tmp_path / "tiny.pth")
    again = load_classifier(tmp_path / "tiny.pth", expected_dim=768 + 16)
    x = np.random.default_rng(0).standard_normal((20, 768 + 16)).astype(np.float32)
    a, b = predict_scores(model, x), predict_scores(again, x)
    assert np.array_equal(a, b)
    assert np.allclose(a.sum(axis=1), 1.0, atol=1e-6)
    # seeded: same seed same model, other seed another
    assert np.array_equal(predict_scores(tiny_classifier(768 + 16, 8, seed=3), x), a)
    assert not np.array_equal(predict_scores(tiny_classifier(768 + 16, 8, seed=4), x), a)


def test_width_mismatch_names_both_numbers(made):
    out, _, _ = made
    with pytest.raises(ClassifierFormatError, match=r"3328.*2048|2048.*3328"):
        load_classifier(out / "full_model.pth", expected_dim=768 + 1280)
    with pytest.raises(ClassifierFormatError, match=r"784.*800|800.*784"):
        load_classifier(out / "small_model.pth", expected_dim=800)


def test_width_mismatch_names_the_actual_models_widths(tmp_path):
    save_state(tiny_classifier(768 + 16, hidden=8), tmp_path / "c.pth")
    dims = {"dnabert": 96, "esm": 64}  # the tiny models
    with pytest.raises(ClassifierFormatError) as err:
        load_classifier(tmp_path / "c.pth", expected_dim=dims)
    msg = str(err.value)
    assert "784-wide" in msg and "160 wide (96 DNABERT-S + 64 ESM-2)" in msg
    assert "-608" not in msg and str(tmp_path / "c.pth") in msg
    with pytest.raises(ClassifierFormatError, match=r"160 wide \(96 DNABERT-S \+ 64 ESM-2\)"):
        classifier_for(str(tmp_path / "c.pth"), dims)
    save_state(tiny_classifier(160, hidden=8), tmp_path / "ok.pth")
    assert load_classifier(tmp_path / "ok.pth", expected_dim=dims).input_dim == 160
    assert classifier_for("tiny", dims).input_dim == 160


def _damaged(made, tmp_path, how):
    out, _, _ = made
    if how == "random":
        raw = np.random.default_rng(11).bytes(4000)
    elif how == "empty":
        raw = b""
    else:  # "truncated" / "legacy-truncated": a real module pickle cut short
        name = "small_model.pth" if how == "truncated" else "legacy_model.pth"
        whole = (out / name).read_bytes()
        raw = whole[: len(whole) // 2]
    path = tmp_path / "300_model.pth"
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("how", ["random", "empty", "truncated", "legacy-truncated"])
def test_corrupt_classifier_says_corrupt_and_names_the_file(made, tmp_path, how):
    path = _damaged(made, tmp_path, how)
    with pytest.raises(UnreadableModelFileError) as err:
        load_classifier(path, expected_dim=768 + 16)
    msg = str(err.value)
    assert str(path) in msg and "not a readable model file" in msg
    assert "corrupt or truncated" in msg and "Get the classifier file again" in msg
    assert "weights_only" not in msg


def test_corrupt_safetensors_classifier_says_corrupt(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "c.safetensors"
    save_file(tiny_classifier(20, hidden=4).state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(UnreadableModelFileError, match=r"c\.safetensors: not a readable model"):
        load_classifier(path)


def test_predict_scores_batches_and_shapes():
    model = tiny_classifier(40, hidden=6, seed=1)
    x = np.random.default_rng(1).standard_normal((11, 40))  # float64 in, float32 out
    whole = predict_scores(model, x)
    assert whole.shape == (11, 2) and whole.dtype == np.float32
    assert np.max(np.abs(predict_scores(model, x, batch=3) - whole)) < 1e-6
    assert predict_scores(model, np.zeros((0, 40))).shape == (0, 2)
    with pytest.raises(ValueError, match="40"):
        predict_scores(model, np.zeros((2, 41)))


# ----------------------------------------------------------------------------------------------
# Refusing harmful pickles


@pytest.mark.parametrize(
    "name,global_name",
    [
        ("evil_system.pth", r"(posix|os)\.system"),
        ("evil_exec.pth", r"builtins\.exec"),
        ("evil_popen.pth", r"subprocess\.Popen"),
        ("evil_legacy.pth", r"(posix|os)\.system"),
        ("evil_inside.pth", r"(posix|os)\.system"),
        ("evil_hook.pth", r"builtins\.print"),
    ],
)
def test_harmful_global_is_refused_and_not_run(made, name, global_name):
    out, marker, _ = made
    with pytest.raises(UnsafeClassifierError, match=global_name):
        load_classifier(out / name)
    assert not marker.exists()


def test_refused_global_is_never_imported(made, monkeypatch, tmp_path):
    out, _, probe_dir = made
    probe_marker = tmp_path / "imported"
    monkeypatch.syspath_prepend(str(probe_dir))
    monkeypatch.setenv("VIRNUC_PROBE_MARKER", str(probe_marker))
    monkeypatch.delenv("VIRNUC_PROBE_QUIET", raising=False)
    sys.modules.pop("virnuc_probe_module", None)
    with pytest.raises(UnsafeClassifierError, match=r"virnuc_probe_module\.harmless"):
        load_classifier(out / "evil_import.pth")
    assert "virnuc_probe_module" not in sys.modules
    assert not probe_marker.exists()


def test_pickle_cannot_mutate_torch_through_allowed_globals():
    from virnuc_core.util.safe_pickle import safe_pickle_load

    before = torch._utils._rebuild_tensor_v2.__defaults__
    # GLOBAL torch._utils._rebuild_tensor_v2, then BUILD (None, {"__defaults__": (1, 2)})
    data = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}"
        b"X\x0c\x00\x00\x00__defaults__(K\x01K\x02tq\x00s\x86b."
    )
    safe_pickle_load(io.BytesIO(data))  # lands on a private wrapper
    assert torch._utils._rebuild_tensor_v2.__defaults__ == before
    data = b"\x80\x02ccollections\nOrderedDict\nN}X\x03\x00\x00\x00fooK\x01s\x86b."
    with pytest.raises(TypeError):
        safe_pickle_load(io.BytesIO(data))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path):
    model = tiny_classifier(12, hidden=4)
    traced = torch.jit.trace(model, torch.zeros(3, 12))
    traced.save(str(tmp_path / "scripted.pt"))
    with pytest.raises(UnsafeClassifierError, match="TorchScript"):
        load_classifier(tmp_path / "scripted.pt")


def test_other_content_is_refused(tmp_path):
    torch.save({"hidden_layer.weight": torch.zeros(4, 10)}, tmp_path / "partial.pth")
    with pytest.raises(ClassifierFormatError, match="missing hidden_layer.bias"):
        load_classifier(tmp_path / "partial.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ClassifierFormatError, match="list"):
        load_classifier(tmp_path / "list.pth")


# ----------------------------------------------------------------------------------------------
# Verdicts and the two TSVs, expected values written by hand


def _write(tmp_path, ids, scores):
    pred, high = (
        tmp_path / "prediction_results.tsv",
        tmp_path / "prediction_results_highestscore.tsv",
    )
    write_predictions(ids, np.array(scores, dtype=np.float32), pred, high)
    return pred.read_text(), high.read_text()


def test_prediction_rows_format_and_ties(tmp_path):
    ids = ["r1_chunk_1F1", "r1_chunk_1R3", "r2_chunk_1F2", "r2_chunk_1F3"]
    scores = [[0.5, 0.5], [0.25, 0.75], [1 / 3, 2 / 3], [0.99999, 1e-05]]
    pred, high = _write(tmp_path, ids, scores)
    assert pred == (
        "Sequence_ID\tPrediction\tscore1\tscore2\n"
        "r1_chunk_1F1\tothers\t0.5\t0.5\n"  # tie: first maximal index, as torch.max
        "r1_chunk_1R3\tvirus\t0.25\t0.75\n"
        "r2_chunk_1F2\tvirus\t0.33333334\t0.6666667\n"
        "r2_chunk_1F3\tothers\t0.99999\t1e-05\n"
    )
    # r1: max(score2) 0.75 >= max(score1) 0.5; r2: 0.6666667 < 0.99999
    assert high == "Modified_ID\tIs_Virus\nr1_chunk_1\tTrue\nr2_chunk_1\tFalse\n"


def test_group_verdicts_one_to_six_frames(tmp_path):
    frames = ["F1", "F2", "F3", "R1", "R2", "R3"]
    ids, scores = [], []
    # g1: 1 frame, others wins
    ids += ["g1_chunk_1F2"]
    scores += [[0.75, 0.25]]
    # g2: 2 frames, a tie across frames (max score2 == max score1) -> True
    ids += ["g2_chunk_1F1", "g2_chunk_1R1"]
    scores += [[0.625, 0.375], [0.375, 0.625]]
    # g3: 3 frames, the best virus score is below the best others score -> False
    ids += ["g3_chunk_1F1", "g3_chunk_1F3", "g3_chunk_1R2"]
    scores += [[0.875, 0.125], [0.25, 0.75], [0.5, 0.5]]
    # g4: 4 frames, one frame votes virus strongly -> True
    ids += [f"g4_chunk_1{f}" for f in frames[:4]]
    scores += [[0.75, 0.25], [0.625, 0.375], [0.0625, 0.9375], [0.875, 0.125]]
    # g5: 5 frames, all others -> False
    ids += [f"g5_chunk_1{f}" for f in frames[:5]]
    scores += [[0.75, 0.25], [0.625, 0.375], [0.5625, 0.4375], [0.875, 0.125], [0.9375, 0.0625]]
    # g6: 6 frames, every frame a tie -> True
    ids += [f"g6_chunk_1{f}" for f in frames]
    scores += [[0.5, 0.5]] * 6
    _, high = _write(tmp_path, ids, scores)
    assert high == (
        "Modified_ID\tIs_Virus\n"
        "g1_chunk_1\tFalse\n"
        "g2_chunk_1\tTrue\n"
        "g3_chunk_1\tFalse\n"
        "g4_chunk_1\tTrue\n"
        "g5_chunk_1\tFalse\n"
        "g6_chunk_1\tTrue\n"
    )


def test_groups_come_out_sorted_like_pandas_groupby(tmp_path):
    ids = [
        "zeta_chunk_2F1",
        "zeta_chunk_10R3",
        "alpha_chunk_1F1",
        "zeta_chunk_2R2",
        "Beta_chunk_1F3",
    ]
    scores = [[0.75, 0.25], [0.25, 0.75], [0.25, 0.75], [0.125, 0.875], [0.5, 0.5]]
    pred, high = _write(tmp_path, ids, scores)
    assert pred.splitlines()[1:] == [  # prediction rows stay in input order
        "zeta_chunk_2F1\tothers\t0.75\t0.25",
        "zeta_chunk_10R3\tvirus\t0.25\t0.75",
        "alpha_chunk_1F1\tvirus\t0.25\t0.75",
        "zeta_chunk_2R2\tvirus\t0.125\t0.875",
        "Beta_chunk_1F3\tothers\t0.5\t0.5",
    ]
    assert high.splitlines() == [
        "Modified_ID\tIs_Virus",
        "Beta_chunk_1\tTrue",  # upper case sorts first
        "alpha_chunk_1\tTrue",
        "zeta_chunk_10\tTrue",  # string order: 10 before 2
        "zeta_chunk_2\tTrue",  # rows 0 and 3 grouped although not adjacent
    ]


def test_chunk_table_sorted_on_disk_in_runs_matches_one_sort(tmp_path):
    """Many chunks through runs of 7 (sorted on disk, merged) give the table a plain
    sort-and-group over all frames gives (pandas' groupby rule, written out here)."""
    rng = np.random.default_rng(5)
    keys = [f"r{rng.integers(0, 60)}_chunk_{rng.integers(1, 4)}" for _ in range(400)]
    ids = [k + rng.choice(["F1", "F2", "R3"]) for k in keys]
    scores = rng.random((400, 2)).astype(np.float32)
    scores[rng.integers(0, 400, 20), rng.integers(0, 2, 20)] = np.nan
    chunks = ChunkMaxima(tmp_path, run_chunks=7)
    for lo in range(0, 400, 13):  # blocks split chunks anywhere
        block = slice(lo, lo + 13)
        from virnuc_core.report.predictions import chunk_maxima

        chunks.add(*chunk_maxima(ids[block], scores[block]))
    want = []
    for key in sorted(set(keys)):
        rows = scores[[k == key for k in keys]]
        s1, s2 = rows[:, 0][~np.isnan(rows[:, 0])], rows[:, 1][~np.isnan(rows[:, 1])]
        m1 = s1.max() if s1.size else np.nan
        m2 = s2.max() if s2.size else np.nan
        want.append((key, bool(m2 >= m1)))
    assert list(chunks.verdicts()) == want
    assert len(chunks.runs) > 10


@pytest.mark.parametrize("run_chunks", [200_000, 1])  # in memory; a run on disk per chunk
def test_nan_frame_inside_a_chunk_is_skipped_as_pandas_max_skips_it(tmp_path, run_chunks):
    """A NaN score among a chunk's adjacent frames does not decide its verdict: the original
    re-reads prediction_results with pandas, whose max skips NaN; the other frames decide."""
    nan = float("nan")
    frames = {
        "a_chunk_1": [[0.4, 0.6], [nan, nan], [0.45, 0.55]],  # virus by F1 and F3
        "b_chunk_1": [[0.3, 0.7], [0.2, nan], [0.35, 0.65]],  # NaN in score2 only
        "c_chunk_1": [[nan, nan], [0.25, 0.75]],  # NaN first in the run
        "d_chunk_1": [[0.6, 0.4], [nan, 0.5], [0.55, 0.45]],  # others by the other frames
        "e_chunk_1": [[nan, nan], [nan, nan]],  # all NaN: max NaN, NaN >= NaN is False
    }
    ids = [f"{k}{f}" for k, rows in frames.items() for f in ("F1", "F2", "F3")[: len(rows)]]
    scores = np.array([r for rows in frames.values() for r in rows], np.float32)
    pred, high = _paths(tmp_path)
    with PredictionWriter(pred, high, run_chunks=run_chunks) as out:
        out.add(ids, scores)
    got = [line.split("\t") for line in high.read_text().splitlines()[1:]]
    assert got == [
        ["a_chunk_1", "True"],
        ["b_chunk_1", "True"],
        ["c_chunk_1", "True"],
        ["d_chunk_1", "False"],
        ["e_chunk_1", "False"],
    ]
    # the original's own steps on the first file (pandas if installed, else plain nanmax)
    try:
        import pandas as pd
    except ImportError:
        want = {}
        for k, rows in frames.items():
            s1, s2 = (np.array([r[c] for r in rows], np.float32) for c in (0, 1))
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slice
                want[k] = bool(np.nanmax(s2) >= np.nanmax(s1))
    else:
        df = pd.read_csv(pred, sep="\t")
        df["Modified_ID"] = df["Sequence_ID"].str[:-2]
        groups = df.groupby("Modified_ID")
        want = (groups["score2"].max() >= groups["score1"].max()).to_dict()
    assert [(k, v == "True") for k, v in got] == sorted(want.items())


def test_ids_are_written_verbatim(tmp_path):
    """A leading quote stays as it is (the original's pandas step would have dropped it)."""
    pred, high = _write(tmp_path, ['"q"x_chunk_1F1'], [[0.75, 0.25]])
    assert high == 'Modified_ID\tIs_Virus\n"q"x_chunk_1\tFalse\n'
    assert pred.splitlines()[1] == '"q"x_chunk_1F1\tothers\t0.75\t0.25'


def test_float64_scores_are_written_as_float32(tmp_path):
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    write_predictions(["s_chunk_1F1"], np.array([[0.1, 0.9]], dtype=np.float64), pred, high)
    assert pred.read_text().splitlines()[1] == "s_chunk_1F1\tvirus\t0.1\t0.9"


def test_empty_and_mismatched_inputs(tmp_path):
    pred, high = _write(tmp_path, [], np.zeros((0, 2)))
    assert pred == "Sequence_ID\tPrediction\tscore1\tscore2\n"
    assert high == "Modified_ID\tIs_Virus\n"
    with pytest.raises(ValueError, match="2 ids but 1"):
        write_predictions(["a_chunk_1F1", "a_chunk_1F2"], np.zeros((1, 2)), *_paths(tmp_path))
    with pytest.raises(ValueError, match="N x 2"):
        write_predictions(["a_chunk_1F1"], np.zeros((1, 3)), *_paths(tmp_path))


def _paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "x.tsv", tmp_path / "y.tsv"
