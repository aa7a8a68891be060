"""What the user sees: summary.tsv, viral.fa, the Snakemake report, rendered in Chromium.

The workflow tests run the demo once (module scope), check the per-read summary against the
prediction files read independently here (Biopython for the FASTA, the chunk rule of spec §1
written out again), build ``snakemake --report`` and open it in headless Chromium.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from Bio import SeqIO
from PIL import Image

from tests.index_helpers import frames_index, index_rows, write_index
from tests.workflow_helpers import DEMO_READS, run_snakemake, write_config
from virnuc_core.report import figures, run_summary, summary, throughput
from virnuc_core.report.predictions import write_predictions
from virnuc_core.report.run_notes import NOTICE_NAME

SAMPLE = "results/demo"
REPORT_RESULTS = {
    "dnabert.png": "Validation",
    "esm.png": "Validation",
    "scores.png": "Predictions",
    "throughput.png": "Throughput",
    "throughput.html": "Throughput",
    "run_summary.html": "Run summary",
}
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=10000", "--window-size=1400,1800",
)  # fmt: skip


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def expected_summary(
    fasta: Path, chunk_length: int, predictions: Path, highest: Path, min_score=None
) -> list:
    """The summary rows computed independently of virnuc_core (forward chunk-id mapping). The
    viral chunks: the chunk table's Is_Virus, or with ``min_score`` each chunk's highest score2
    (as written) >= min_score."""
    owner, reads = {}, []
    for rec in SeqIO.parse(fasta, "fasta"):
        n = max(1, math.ceil(len(rec.seq) / chunk_length))
        owner.update({f"{rec.id}_chunk_{k}": rec.id for k in range(1, n + 1)})
        reads.append((rec.id, len(rec.seq), n))
    frames, best, chunk_best = defaultdict(int), {}, defaultdict(list)
    for row in _tsv(predictions):
        read = owner[row["Sequence_ID"][:-2]]
        frames[read] += 1
        chunk_best[row["Sequence_ID"][:-2]].append(float(row["score2"]))
        if read not in best or float(row["score2"]) > float(best[read]):
            best[read] = row["score2"]
    viral = defaultdict(int)
    if min_score is None:
        for row in _tsv(highest):
            viral[owner[row["Modified_ID"]]] += row["Is_Virus"] == "True"
    else:
        for chunk, scores in chunk_best.items():
            viral[owner[chunk]] += max(scores) >= min_score
    return [
        [rid, str(length), str(n), str(frames[rid]), str(viral[rid]), str(viral[rid] > 0),
         best.get(rid, "NA"), f"{viral[rid] / n:.6g}"]
        for rid, length, n in reads
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Unit tests (no workflow)


def test_summary_maps_reads_forward_even_with_chunk_in_ids(tmp_path):
    # "x_chunk_1" is a read id; read "x" also has a chunk "x_chunk_1". Parsing ids backwards
    # would merge them; "y" has no kept frame.
    fasta = tmp_path / "reads.fa"
    fasta.write_text(">x\n" + "A" * 900 + "\n>x_chunk_1\n" + "C" * 120 + "\n>y\nGGGG\n")
    ids = ["x_chunk_1F1", "x_chunk_1R2", "x_chunk_2F3", "x_chunk_1_chunk_1F2"]
    scores = np.array([[0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9]], dtype=np.float32)
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    write_predictions(ids, scores, pred, high)
    got = list(summary.summarize_reads(fasta, 500, pred, high, frames_index(fasta, pred, 500)))
    rows = [s.row() for _, s in got]
    assert rows == expected_summary(fasta, 500, pred, high)
    assert rows == [
        ["x", "900", "2", "3", "1", "True", "0.8", "0.5"],
        ["x_chunk_1", "120", "1", "1", "1", "True", "0.9", "1"],
        ["y", "4", "1", "0", "0", "False", "NA", "0"],
    ]
    totals = summary.write_read_outputs(got, tmp_path / "s.tsv", tmp_path / "v.fa")
    assert (totals.reads, totals.chunks, totals.frames, totals.viral_reads) == (3, 4, 4, 2)
    assert [r.id for r in SeqIO.parse(tmp_path / "v.fa", "fasta")] == ["x", "x_chunk_1"]


def _min_score_inputs(tmp_path):
    """Three reads whose chunk calls differ between the original rule and min_score."""
    fasta = tmp_path / "reads.fa"
    fasta.write_text(">a\n" + "A" * 900 + "\n>b\n" + "C" * 400 + "\n>c\nGGGGGG\n")
    ids = ["a_chunk_1F1", "a_chunk_1R1", "a_chunk_2F2", "b_chunk_1F1", "c_chunk_1F3"]
    # a_chunk_1: best P(virus) 0.4 < best P(others) 0.7 (not viral by the original rule);
    # a_chunk_2: 0.9 >= 0.1 (viral); b_chunk_1: 0.55 >= 0.45; c_chunk_1: 0.3 < 0.7.
    scores = [[0.6, 0.4], [0.7, 0.3], [0.1, 0.9], [0.45, 0.55], [0.7, 0.3]]
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    write_predictions(ids, np.array(scores, np.float32), pred, high)
    return fasta, pred, high


@pytest.mark.parametrize(
    "min_score, viral",
    [(None, ["1", "1", "0"]), (0.4, ["2", "1", "0"]), (0.9, ["1", "0", "0"]),
     (0.95, ["0", "0", "0"]), (0.0, ["2", "1", "1"])],
)  # fmt: skip
def test_min_score_calls_a_chunk_viral_by_its_best_virus_score(tmp_path, min_score, viral):
    fasta, pred, high = _min_score_inputs(tmp_path)
    tables = pred.read_bytes(), high.read_bytes()
    got = list(
        summary.summarize_reads(fasta, 500, pred, high, frames_index(fasta, pred, 500), min_score)
    )
    rows = [s.row() for _, s in got]
    assert [r[4] for r in rows] == viral  # 0.4 and 0.9 are written as such: equal is viral
    assert rows == expected_summary(fasta, 500, pred, high, min_score)
    summary.write_read_outputs(got, tmp_path / "s.tsv", tmp_path / "v.fa")
    called = [r.id for r in SeqIO.parse(tmp_path / "v.fa", "fasta")]
    assert called == [rid for rid, v in zip("abc", viral, strict=True) if v != "0"]
    assert (pred.read_bytes(), high.read_bytes()) == tables  # the original's tables as they were
    assert [r["Is_Virus"] for r in _tsv(high)] == ["False", "True", "True", "False"]


def _summarize(tmp_path, fasta, pred, high, chunks, min_score=None, regions=False):
    """The summarize_sample step on small inputs; returns its outputs."""
    import h5py

    features = tmp_path / "features.h5"
    with h5py.File(features, "w") as h5:
        h5.attrs["esm.precision"] = "fp32"
    frames = len(_tsv(pred))
    reads = len(list(SeqIO.parse(fasta, "fasta")))
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({"reads": reads, "chunks": chunks, "frames": frames}))
    ins = {"predictions": pred, "highest": high, "counts": counts, "features": features}
    ins["index"] = frames_index(fasta, pred, 500)
    names = ("summary", "html", "viral") + (("regions",) if regions else ())
    exts = {"summary": "tsv", "html": "html", "viral": "fa", "regions": "tsv"}
    outs = {k: tmp_path / f"{k}.{exts[k]}" for k in names}
    run_summary.summarize_sample("s", [str(fasta)], 500, "tiny", ins, outs, "", min_score)
    return outs


def test_run_summary_says_which_rule_made_the_calls(tmp_path):
    fasta, pred, high = _min_score_inputs(tmp_path)
    outs = _summarize(tmp_path, fasta, pred, high, chunks=4)
    page = outs["html"].read_text()
    rule = "the original rule (best P(virus) &gt;= best P(others))"
    assert f"<td>viral calls</td><td>{rule}</td>" in page
    assert f"chunks called viral, by {rule}</td><td>2 (50.0%)</td>" in page
    outs = _summarize(tmp_path, fasta, pred, high, chunks=4, min_score=0.9)
    page = outs["html"].read_text()
    assert "<td>viral calls</td><td>min_score 0.9</td>" in page and "original rule" not in page
    assert "chunks called viral, by min_score 0.9</td><td>1 (25.0%)</td>" in page
    assert [r.id for r in SeqIO.parse(outs["viral"], "fasta")] == ["a"]
    with pytest.raises(summary.SummaryError, match=r"'min_score' must be in \[0, 1\].*nan"):
        _summarize(tmp_path, fasta, pred, high, chunks=4, min_score=float("nan"))


def test_viral_fraction_is_the_last_column_and_follows_the_rule(tmp_path):
    # read "t": 3 chunks at L=500 (1200 bases), 2 viral by the original rule, 1 by min_score
    fasta = tmp_path / "reads.fa"
    fasta.write_text(">t\n" + "A" * 1200 + "\n>u\nACGTACGT\n")
    ids = ["t_chunk_1F1", "t_chunk_1R1", "t_chunk_2F1", "t_chunk_3R2", "u_chunk_1F1"]
    scores = [[0.2, 0.8], [0.3, 0.7], [0.9, 0.1], [0.4, 0.6], [0.5, 0.5]]
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    write_predictions(ids, np.array(scores, np.float32), pred, high)
    for min_score, fractions in ((None, ["0.666667", "1"]), (0.7, ["0.333333", "0"])):
        got = list(
            summary.summarize_reads(
                fasta, 500, pred, high, frames_index(fasta, pred, 500), min_score
            )
        )
        summary.write_read_outputs(got, tmp_path / "s.tsv")
        rows = _tsv(tmp_path / "s.tsv")
        assert list(rows[0])[-1] == "viral_fraction" and list(rows[0])[:7] == [
            "read_id", "length", "chunks", "frames", "viral_chunks", "viral", "max_virus_score"
        ]  # fmt: skip
        assert [r["viral_fraction"] for r in rows] == fractions
        for r in rows:  # viral chunks / chunks
            assert float(r["viral_fraction"]) == pytest.approx(
                int(r["viral_chunks"]) / int(r["chunks"]), abs=1e-6
            )
        # the score histogram still reads max_virus_score, not the last column
        assert list(figures.read_scores(tmp_path / "s.tsv")) == ["0.8", "0.5"]


def test_summary_refuses_predictions_of_other_reads(tmp_path):
    fasta = tmp_path / "reads.fa"
    fasta.write_text(">a\nACGT\n")
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    write_predictions(["b_chunk_1F1"], np.array([[0.5, 0.5]], np.float32), pred, high)
    with pytest.raises(summary.SummaryError, match="belongs to no read.*rerun"):
        list(summary.summarize_reads(fasta, 500, pred, high, frames_index(fasta, pred, 500)))
    # an index that puts the row at read "a" (the ids say it is a frame of another read)
    index = write_index(tmp_path / "a.npy", index_rows(fasta, ["a_chunk_1F1"], 500))
    with pytest.raises(summary.SummaryError, match="'b_chunk_1F1' belongs to no read.*rerun"):
        list(summary.summarize_reads(fasta, 500, pred, high, index))


def test_summary_joins_rows_to_reads_by_the_index_numbers(tmp_path):
    # Read ids that end like chunk ids, and a read without frames between: each row goes to the
    # read and chunk the index gives; an index that disagrees with the rows is refused.
    fasta = tmp_path / "reads.fa"
    seqs = {"x": "A" * 900, "x_chunk_1": "C" * 120, "y": "GGGG", "x_chunk_2": "T" * 600}
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    ids = ["x_chunk_1F1", "x_chunk_2F3", "x_chunk_1_chunk_1F2", "x_chunk_2_chunk_2R1"]
    scores = np.array([[0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]], np.float32)
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    write_predictions(ids, scores, pred, high)
    rows = index_rows(fasta, ids, 500)
    assert rows["read"].tolist() == [0, 0, 1, 3] and rows["chunk"].tolist() == [0, 1, 0, 1]
    got = summary.summarize_reads(fasta, 500, pred, high, write_index(tmp_path / "i.npy", rows))
    assert [s.row() for _, s in got] == expected_summary(fasta, 500, pred, high)
    wrong = {
        "chunk": ([0, 0, 1, 3], [0, 0, 0, 1], "'x_chunk_2F3' belongs to no read"),
        "read": ([0, 0, 1, 4], [0, 1, 0, 1], "'x_chunk_2_chunk_2R1' belongs to no read"),
        "order": ([0, 0, 1, 0], [0, 1, 0, 1], "'x_chunk_2_chunk_2R1' comes after read 'x_chun"),
        "fewer": ([0, 0, 1], [0, 1, 0], "R1' and the rows after it have no frame.*this index"),
        "more": ([0, 0, 1, 3, 3], [0, 1, 0, 1, 1], "has 4 rows but .* 5 frames.*this index"),
    }
    for name, (reads, chunks, message) in wrong.items():
        bad = np.zeros(len(reads), rows.dtype)
        bad["read"], bad["chunk"] = reads, chunks
        index = write_index(tmp_path / f"{name}.npy", bad)
        with pytest.raises(summary.SummaryError, match=message):
            list(summary.summarize_reads(fasta, 500, pred, high, index))


def test_throughput_row_comes_from_the_shard_file_alone(tmp_path):
    import h5py

    path = tmp_path / "embeddings" / "esm" / "shard_3.h5"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as h5:
        h5["embeddings"] = np.zeros((97, 4), np.float32)
        h5.attrs.update(model="esm", device="NVIDIA H200")
        metrics = {"tokens_per_s": 23363.0, "records_per_s": 159.8, "wall_s": 4.0,
                   "max_rss_mb": 300.0, "torch_device": "cuda:1", "device_source": "lock",
                   "gpu_index": 1}  # fmt: skip
        h5.attrs.update({f"metrics.{k}": v for k, v in metrics.items()})
    row = throughput.shard_throughput(path)
    assert (row.model, row.shard, row.device, row.records) == ("esm", 3, "NVIDIA H200", 97)
    assert (row.tokens_per_s, row.records_per_s, row.wall_s, row.max_rss_mb) == (
        23363.0, 159.8, 4.0, 300.0,
    )  # fmt: skip
    assert row.torch_device == "cuda:1 (lock, GPU 1)" and row.records_per_wall_s == 97 / 4.0
    with h5py.File(path, "a") as h5:  # a file without metrics still gives a row, NA
        for key in [k for k in h5.attrs if k.startswith("metrics.")]:
            del h5.attrs[key]
    row = throughput.shard_throughput(path)
    assert row.tokens_per_s is None and row.torch_device == "NA"
    assert throughput.throughput_rows([row])[0][5] == "NA"


# --------------------------------------------------------------------------------------------
# Workflow tests


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    """One demo run (viral_fasta on, as in config/demo.yaml), its console (console.txt), and
    report.html made by the report command the run's last lines print, as a user would."""
    work = tmp_path_factory.mktemp("report")
    write_config(work, viral_fasta=True)
    proc = run_snakemake(work)
    (work / "console.txt").write_text(proc.stdout + proc.stderr)
    said = re.search(r"^The report \(.*?\): (snakemake .*)$", proc.stderr, re.MULTILINE)
    assert said, f"the run did not print the report command:\n{proc.stderr[-3000:]}"
    command = [sys.executable, "-m", *shlex.split(said.group(1))]
    made = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0 and (work / "report.html").exists(), made.stderr[-3000:]
    return work


@pytest.mark.workflow
def test_summary_tsv_matches_the_prediction_files(demo_report):
    s = demo_report / SAMPLE
    lines = (s / "summary.tsv").read_text().splitlines()
    assert lines[0].split("\t") == list(summary.SUMMARY_COLUMNS)
    rows = [line.split("\t") for line in lines[1:]]
    expected = expected_summary(
        DEMO_READS, 500, s / "prediction_results.tsv", s / "prediction_results_highestscore.tsv"
    )
    assert rows == expected
    counts = json.loads((s / "frames.counts.json").read_text())
    assert len(rows) == counts["reads"] == 40
    assert sum(int(r[2]) for r in rows) == counts["chunks"]
    assert sum(int(r[3]) for r in rows) == counts["frames"]
    # The demo has both kinds of reads: scored ones and ones with no kept frame.
    assert any(r[6] == "NA" for r in rows) and any(r[6] != "NA" for r in rows)


@pytest.mark.workflow
def test_the_run_ends_saying_where_the_results_are_and_that_the_demo_means_nothing(demo_report):
    console = (demo_report / "console.txt").read_text().splitlines()
    start = [i for i, line in enumerate(console) if line.startswith("virnuc finished.")]
    assert len(start) == 1, "\n".join(console[-20:])
    ours, after = console[start[0] : start[0] + 4], console[start[0] + 4 :]
    assert ours[1] == f"  {demo_report}/{SAMPLE}/summary.tsv"
    assert ours[2].startswith(f"The report ({demo_report}/report.html, one self-contained")
    assert f"--configfile {demo_report}/config.yaml" in ours[2]  # the run's own config
    assert ours[3].startswith("DEMO RUN: models.dnabert, models.esm and classifier are 'tiny'")
    assert "MEANINGLESS" in ours[3] and ours[3].endswith(f"{SAMPLE}/{NOTICE_NAME}.")
    assert all(line.startswith(("Complete log", "Elapsed time")) for line in after), after
    # beside the tables (whose columns stay as they are), and on the report's pages
    notice = (demo_report / SAMPLE / NOTICE_NAME).read_text()
    assert notice.startswith("DEMO RUN: models.dnabert, models.esm and classifier are 'tiny'")
    assert "summary.tsv, prediction_results.tsv" in notice and "MEANINGLESS" in notice
    front = (demo_report / "report.html").read_text()
    assert (
        "DEMO RUN: tiny random models. Every call and score in this report is MEANINGLESS." in front
    )
    page = (demo_report / SAMPLE / "report/run_summary.html").read_text()
    assert "Tiny random models (demo): these predictions are meaningless." in page


@pytest.mark.workflow
def test_viral_fasta_holds_the_reads_with_a_viral_chunk(demo_report):
    rows = _tsv(demo_report / SAMPLE / "summary.tsv")
    viral = {r["read_id"]: r for r in rows if int(r["viral_chunks"]) > 0}
    inputs = {r.id: str(r.seq) for r in SeqIO.parse(DEMO_READS, "fasta")}
    out = list(SeqIO.parse(demo_report / SAMPLE / "viral.fa", "fasta"))
    assert [r.id for r in out] == [rid for rid in inputs if rid in viral] and out
    for rec in out:
        assert str(rec.seq) == inputs[rec.id]
        row = viral[rec.id]
        assert f"viral_chunks={row['viral_chunks']}/{row['chunks']}" in rec.description


@pytest.mark.workflow
def test_report_embeds_every_result(demo_report):
    by_name = _report_results((demo_report / "report.html").read_text())
    assert set(by_name) == set(REPORT_RESULTS)
    for name, (path, entry) in by_name.items():
        assert entry["caption"].strip(), f"{name} has no caption"
        data = base64.b64decode(entry["data_uri"].split("base64,", 1)[1])
        assert data == (demo_report / path).read_bytes()  # self-contained: the file itself
    table = (demo_report / SAMPLE / "report/throughput.tsv").read_text().splitlines()
    assert len(table) == 1 + 2 * 2  # 2 models x 2 shards
    assert all("NA" not in row.split("\t") for row in table[1:])  # every job's metrics read


def _report_results(html: str) -> dict[str, tuple[str, dict]]:
    """Result name -> (path, entry) of the report's embedded ``results`` object."""
    start = re.search(r"var results\s*=\s*(?=\{)", html).end()  # not the JS libraries' own
    results, _ = json.JSONDecoder().raw_decode(html, start)
    return {entry["name"]: (path, entry) for path, entry in results.items()}


def _chromium() -> str:
    """The Chromium binary; installed with apt where this runs as root, else the test skips."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and this is not root with apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=900)
        subprocess.run(install, env=env, capture_output=True, timeout=900)
    found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium could not be installed with apt-get (offline?)")
    return found


def _open_in_chromium(html: Path, shot: Path, profile: Path) -> str:
    """Screenshot the page after its scripts ran; return the DOM as the browser built it."""
    proc = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
         "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    return proc.stdout


def _showing(report: str, name: str, category: str, kind: str) -> str:
    """The report with a script that opens one result, as a click in its menu would, and then
    records the shown image's decoded size (or "html") on <body data-virnuc-shown>."""
    script = f"""<script>
window.addEventListener("load", function () {{ setTimeout(function () {{
  var key = Object.keys(results).find(function (k) {{ return results[k].name === "{name}"; }});
  app.setView({{navbarMode: "subcategory", category: "{category}", subcategory: "Other",
               content: "{kind}", contentPath: results[key].data_uri, resultPath: key}});
  setTimeout(function () {{
    var shown = document.querySelector("#app img[src^='data:image/png']");
    var frame = document.querySelector("#app iframe[src^='data:text/html']");
    document.body.setAttribute("data-virnuc-shown",
      shown ? shown.naturalWidth + "x" + shown.naturalHeight : (frame ? "html" : "none"));
  }}, 500);
}}, 500); }});
</script>"""
    end = report.rindex("</body>")
    return report[:end] + script + report[end:]


def _dark_pixels(png: Path, left: int = 0) -> int:
    """Pixels darker than light grey, right of column ``left``."""
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))[:, left:]
    return int((pixels.min(axis=2) < 200).sum())


def _assert_shows(shot: Path, what: str, original: Path | None = None) -> None:
    """Right of the report's menu (360 px, the same on every view), the screenshot shows the
    figure (at least 80% of its dark pixels: axes, bars, text) or, for a page, some text."""
    dark = _dark_pixels(shot, left=360)
    want = 0.8 * _dark_pixels(original) if original else 2000
    assert dark >= want, f"{what}: {dark} dark pixels in the screenshot, expected >= {want:.0f}"


@pytest.mark.workflow
def test_report_renders_in_chromium(demo_report, tmp_path):
    report = demo_report / "report.html"
    dom = _open_in_chromium(report, tmp_path / "front.png", tmp_path / "p0")
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "virnuc run report" in text and "Where to look" in text
    assert (
        "DEMO RUN: tiny random models. Every call and score in this report is MEANINGLESS" in text
    )
    for category in set(REPORT_RESULTS.values()):
        assert category in text, f"category {category!r} missing from the rendered menu"
    _assert_shows(tmp_path / "front.png", "the front page")  # text and rule graph

    source = report.read_text()
    paths = {name: path for name, (path, _) in _report_results(source).items()}
    for name, category in REPORT_RESULTS.items():
        kind = "html" if name.endswith(".html") else "img"
        page = tmp_path / f"{name}.html"
        page.write_text(_showing(source, name, category, kind))
        shot = tmp_path / f"{name}.png"
        dom = _open_in_chromium(page, shot, tmp_path / f"p_{name}")
        shown = re.search(r'data-virnuc-shown="([^"]*)"', dom).group(1)
        original = demo_report / paths[name] if kind == "img" else None
        if original:
            with Image.open(original) as image:
                assert shown == f"{image.width}x{image.height}", name
        else:
            assert shown == "html", name
        _assert_shows(shot, name, original)


def test_a_nan_frame_score_is_never_a_reads_best_nor_orders_the_top_reads(tmp_path):
    """A NaN score2 (a damaged table) is skipped as pandas' max skips it: the read's best is its
    highest finite score, whichever row comes first, and the run summary's top reads are the
    highest scored ones."""
    fasta = tmp_path / "reads.fa"
    ids = [f"r{i}" for i in range(25)] + ["n"]
    fasta.write_text("".join(f">{r}\n{'A' * 600}\n" for r in ids))
    rows = [("r0_chunk_1F1", np.nan), ("r0_chunk_1F2", 0.9), ("r0_chunk_2F1", 0.3)]
    rows += [(f"r{i}_chunk_1F1", i / 100) for i in range(1, 25)] + [("n_chunk_1F1", np.nan)]
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    scores = np.array([[1 - s, s] for _, s in rows], dtype=np.float32)
    write_predictions([r for r, _ in rows], scores, pred, high)
    got = list(summary.summarize_reads(fasta, 500, pred, high, frames_index(fasta, pred, 500)))
    assert got[0][1].max_virus_score == "0.9"
    totals = summary.write_read_outputs(got, tmp_path / "s.tsv")
    # pandas' max over the same column, per read, as the reference for the top 20
    assert got[-1][1].max_virus_score == "nan"  # read n: every frame NaN, nothing better
    best = {r: max(s for rid, s in rows if rid.startswith(f"{r}_") and s == s) for r in ids[:-1]}
    top = sorted(ids[:-1], key=lambda r: best[r], reverse=True)[:20]
    assert [r.read_id for r in totals.best()] == top
