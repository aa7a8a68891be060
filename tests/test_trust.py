"""Trust (issue 15), through the user's path: Snakemake on the demo (tiny models, CPU).

No value from a path reaches a shell; a resume never reuses work made from other sequences or
rows changed on disk; a changed classifier reruns what uses it; a missing or damaged classifier
is refused before any job runs; ids are kept verbatim; the index step reads FASTQ and a BOM and
names CR-only line ends; damaged model files are named; a failed job's log is on the console;
set-aside work is deleted once its shard completes.

The expensive runs are shared (module fixtures): one run killed with SIGKILL while both ESM-2
shards are half done (rows 3, 4, 16), its rerun after one base is edited and committed rows are
changed in place, and one clean run of the edited input from a path full of shell syntax and
with quoted read ids (rows 1, 2, 5, 7, 14, and the reference for rows 3 and 4).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import yaml

from tests.workflow_helpers import (
    DEMO_READS,
    REPO,
    committed,
    embed_job_pid,
    planned_jobs,
    run_snakemake,
    shard_range,
    snakemake_cmd,
    write_config,
)
from virnuc_core.data.index import index_sample, open_index
from virnuc_core.engine.models.classify import save_state, tiny_classifier
from virnuc_core.jobs.store import ROWS_NAME, row_dtype

pytestmark = pytest.mark.workflow
SAMPLE = "results/demo"
TINY_WIDTHS = {"dnabert": 96, "esm": 64}  # the tiny models' embedding widths
# Each way a shell could run a command from a path makes its own marker file.
MARKERS = ("PWNED1", "PWNED2", "PWNED3", "PWNED4")
HOSTILE_DIR = "in dir \"dq\" 'sq' $(touch PWNED1) ; touch PWNED3 ;"
HOSTILE_FILE = "reads `touch PWNED2` ; touch PWNED4 ; x.fa"
QUOTED_IDS = {"demo05": '"q""x', "demo12": '"a\'b"', "demo21": "x\"y'z"}
# Both ESM-2 shards run at once (one thread each) and commit every batch (about 6 proteins).
RUN_SETTINGS = {
    "token_budget": {"dnabert": 4096, "esm": 1024},
    "checkpoint_every": 5,
    "reader_workers": 0,
}
ESM_SHARDS = [f"{SAMPLE}/embeddings/esm/shard_{i}.h5" for i in range(2)]
TABLES = ("prediction_results.tsv", "prediction_results_highestscore.tsv", "summary.tsv")
COMPARED = (*TABLES, "viral.fa", "features.h5")


def console(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def markers_under(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob("*") if p.name in MARKERS]


def quoted_reads() -> str:
    """The demo reads, some ids made to start with or hold quotes."""
    lines = DEMO_READS.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(">") and line[1:].split()[0] in QUOTED_IDS:
            name, rest = line[1:].split(" ", 1)
            lines[i] = f">{QUOTED_IDS[name]} {rest}"
    text = "".join(lines)
    assert all(f">{q} " in text for q in QUOTED_IDS.values())
    return text


def edit_base(text: str, read: int, pos: int, base: str) -> str:
    """``text`` (FASTA) with base ``pos`` of read number ``read`` set to ``base``, in place."""
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if line.startswith(">")]
    i, left = headers[read] + 1, pos
    while len(lines[i].rstrip("\n")) <= left:
        left -= len(lines[i].rstrip("\n"))
        i += 1
    line = lines[i]
    lines[i] = line[:left] + base + line[left + 1 :]
    return "".join(lines)


def index_of(text: str, folder: Path) -> tuple[np.ndarray, bytes]:
    """The index stage's rows and proteins for reads ``text`` (the library the step calls)."""
    folder.mkdir(parents=True, exist_ok=True)
    reads = folder / "reads.fa"
    reads.write_text(text)
    names = {"frames": "f.fa", "proteins": "p.faa", "index": "i.npy", "counts": "c.json"}
    out = {k: str(folder / n) for k, n in names.items()}
    counts = index_sample([str(reads)], 500, out)
    return open_index(out["index"]).read(0, counts.frames), Path(out["proteins"]).read_bytes()


def committed_records(work: Path, dim: int) -> np.ndarray:
    rows = np.fromfile(work / ROWS_NAME, row_dtype(dim), count=committed(work))
    return rows["record"]


def assert_same_outputs(a: Path, b: Path) -> None:
    """The same tables, byte for byte, and the same feature arrays."""
    for name in (*TABLES, "viral.fa"):
        assert (a / SAMPLE / name).read_bytes() == (b / SAMPLE / name).read_bytes(), name
    with h5py.File(a / SAMPLE / "features.h5") as fa, h5py.File(b / SAMPLE / "features.h5") as fb:
        assert fa["ids"].asstr()[()].tolist() == fb["ids"].asstr()[()].tolist()
        for model in TINY_WIDTHS:
            np.testing.assert_array_equal(fa[model][()], fb[model][()], err_msg=model)


# ------------------------------------------------------------------ the shared runs


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A classifier file: the demo's tiny one, saved (the same predictions as ``tiny``)."""
    path = tmp_path_factory.mktemp("classifier") / "tiny_160.pth"
    save_state(tiny_classifier(sum(TINY_WIDTHS.values())), path)
    return path


@pytest.fixture(scope="module")
def killed(tmp_path_factory, classifier):
    """A run of both ESM-2 shards, each job killed with SIGKILL half way; a copy of it as the
    kill left it (``snapshot``)."""
    work = tmp_path_factory.mktemp("killed")
    reads = tmp_path_factory.mktemp("killed_in") / "reads.fa"
    reads.write_text(quoted_reads())
    write_config(work, samples={"demo": str(reads)}, classifier=str(classifier), **RUN_SETTINGS)
    env = {**os.environ, "VIRNUC_TEST_BATCH_DELAY": "0.8"}
    snake = subprocess.Popen(
        snakemake_cmd(work, "--keep-going", *ESM_SHARDS),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    works = [work / SAMPLE / f"work/esm/shard_{i}" for i in range(2)]
    deadline = time.time() + 300
    while min(map(committed, works)) < 10 and time.time() < deadline and snake.poll() is None:
        time.sleep(0.1)
    pids = [embed_job_pid(w) for w in works]
    if None in pids or min(map(committed, works)) < 10:
        snake.kill()
        pytest.fail(f"the ESM-2 jobs never got going: {snake.communicate()[0][-3000:]}")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    out = snake.communicate(timeout=600)[0]
    assert snake.returncode != 0, out
    for i, w in enumerate(works):
        lo, hi = shard_range(work, "demo", "esm", i)
        assert 10 <= committed(w) < hi - lo, f"shard {i} was not left half done"
    snapshot = tmp_path_factory.mktemp("snapshot") / "run"
    shutil.copytree(work, snapshot, symlinks=True)
    return SimpleNamespace(work=work, reads=reads, snapshot=snapshot)


@pytest.fixture(scope="module")
def edited(killed, tmp_path_factory) -> str:
    """The reads with one base changed: in a read whose frames all lie in ESM-2 shard 1, one of
    them committed, so that the same frames are kept (same index) but a committed frame's
    protein changes."""
    work = killed.work
    n = json.loads((work / SAMPLE / "frames.counts.json").read_text())["frames"]
    rows = open_index(work / SAMPLE / "frames.index.npy").read(0, n)
    lo, hi = shard_range(work, "demo", "esm", 1)
    done = set(committed_records(work / SAMPLE / "work/esm/shard_1", TINY_WIDTHS["esm"]).tolist())
    before = killed.reads.read_text()
    base_rows, base_proteins = index_of(before, tmp_path_factory.mktemp("index_before"))
    assert np.array_equal(base_rows, rows)
    scratch = tmp_path_factory.mktemp("index_edit")
    reads = np.asarray(rows["read"])
    for read in sorted({int(reads[r]) for r in done}):
        frames = np.flatnonzero(reads == read)
        if frames.min() < lo or frames.max() >= hi:
            continue  # shard 0 must stay as it was: only its rows are changed (row 4)
        targets = [r for r in frames.tolist() if r in done]
        for pos in range(10, 500, 7):
            for base in "ACGT":
                text = edit_base(before, read, pos, base)
                if text == before:
                    continue
                new_rows, proteins = index_of(text, scratch)
                if not np.array_equal(new_rows, rows):
                    continue  # other frames kept: not the case of row 3
                spans = [(int(rows["aa_offset"][r]), int(rows["aa_length"][r])) for r in targets]
                if any(proteins[o : o + k] != base_proteins[o : o + k] for o, k in spans):
                    return text
    pytest.fail("no same-frames edit of a committed frame found")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, classifier, edited) -> Path:
    """One uninterrupted run of the edited reads, from a path holding shell syntax."""
    work = tmp_path_factory.mktemp("clean")
    folder = tmp_path_factory.mktemp("clean_in") / HOSTILE_DIR
    folder.mkdir()
    reads = folder / HOSTILE_FILE
    reads.write_text(edited)
    write_config(work, samples={"demo": str(reads)}, classifier=str(classifier), **RUN_SETTINGS)
    run_snakemake(work)
    return work


@pytest.fixture(scope="module")
def resumed(killed, edited) -> subprocess.CompletedProcess:
    """The killed run again, after one base of a read in ESM-2 shard 1 was edited (same length,
    same frames) and one committed row of shard 0 was changed in place (same size)."""
    rows = killed.work / SAMPLE / "work/esm/shard_0" / ROWS_NAME
    dtype = row_dtype(TINY_WIDTHS["esm"])
    with open(rows, "r+b") as handle:  # the first float of the first committed row
        handle.seek(dtype.fields["embedding"][1])
        (value,) = struct.unpack("<f", handle.read(4))
        handle.seek(dtype.fields["embedding"][1])
        handle.write(struct.pack("<f", value * 1.5 + 0.25))
    size = killed.reads.stat().st_size
    killed.reads.write_text(edited)
    assert killed.reads.stat().st_size == size
    return run_snakemake(killed.work, *(f"{SAMPLE}/{name}" for name in COMPARED))


# ------------------------------------------------------------------ rows 8, 9, 10, 15


def test_index_step_reads_fastq_and_a_bom_and_names_cr_only_line_ends(tmp_path):
    text = DEMO_READS.read_bytes()
    fastq = []
    for record in text.decode().split(">")[1:]:
        header, *seq = record.splitlines()
        seq = "".join(seq)
        fastq.append(f"@{header}\n{seq}\n+\n{'I' * len(seq)}\n")
    rna = b"".join(  # the sequence lines written as RNA
        line if line.startswith(b">") else line.replace(b"T", b"U").replace(b"t", b"u")
        for line in text.splitlines(keepends=True)
    )
    inputs = {
        "fa": text,
        "fq": "".join(fastq).encode(),
        "bom": b"\xef\xbb\xbf" + text,
        "cr": text.replace(b"\n", b"\r"),
        "rna": rna,
    }
    samples = {}
    for name, data in inputs.items():
        samples[name] = str(tmp_path / f"{name}_reads.txt")
        Path(samples[name]).write_bytes(data)
    write_config(tmp_path, samples=samples)
    targets = [f"results/{s}/frames.counts.json" for s in samples]
    # Run from another folder than the repository: the workflow profile is found beside the
    # Snakefile (a plain run: no --profile).
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "--keep-going", *targets),
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = console(proc)
    assert proc.returncode != 0
    for name in ("fq", "bom"):  # the same frames as from the FASTA
        for f in ("frames.fa", "proteins.faa", "frames.index.npy", "frames.counts.json"):
            got = (tmp_path / f"results/{name}/{f}").read_bytes()
            assert got == (tmp_path / f"results/fa/{f}").read_bytes(), (name, f)
    assert json.loads((tmp_path / "results/fq/frames.counts.json").read_text())["reads"] == 40
    # RNA spelling: the frames of the DNA spelling, said once on the console and counted
    for f in ("frames.fa", "proteins.faa", "frames.index.npy"):
        got = (tmp_path / f"results/rna/{f}").read_bytes()
        assert got == (tmp_path / f"results/fa/{f}").read_bytes(), ("rna", f)
    rna_counts = json.loads((tmp_path / "results/rna/frames.counts.json").read_text())
    assert (rna_counts["rna_reads"], rna_counts["rna_files"]) == (40, 1)
    assert out.count("read(s) written as RNA") == 1
    assert f"WARNING {samples['rna']!r}: 40 read(s) written as RNA (U): U read as T" in out
    assert not (tmp_path / "results/cr/frames.counts.json").exists()
    # row 10: the format is named, with the file
    assert f"{samples['cr']}: line 1, record 'demo00'" in out
    assert "lines end with CR only (old Mac format): convert to LF" in out
    # row 15: the failed job's log is on the console (show-failed-logs, profiles/default): its
    # lines as the log file has them, time and logger name first
    assert "Logfile logs/cr/index_fasta.log:" in out
    assert re.search(r"\d\d:\d\d:\d\d,\d+ virnuc ERROR rule index_fasta: .*CR only", out)


# ------------------------------------------------------------------ rows 6, 11


def test_missing_classifier_is_refused_before_any_job_naming_the_path(tmp_path):
    missing = tmp_path / "no such folder" / "300_model.pth"
    write_config(tmp_path, classifier=str(missing))
    proc = run_snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert f"classifier {missing} does not exist: set classifier to the model file" in console(proc)
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("how", ["random", "truncated"])
def test_corrupt_classifier_is_refused_before_any_job_naming_the_file(tmp_path, how):
    path = tmp_path / "300_model.pth"
    save_state(tiny_classifier(sum(TINY_WIDTHS.values())), path)
    raw = path.read_bytes()
    path.write_bytes(np.random.default_rng(3).bytes(len(raw)) if how == "random" else raw[:-99])
    write_config(tmp_path, classifier=str(path))
    proc = run_snakemake(tmp_path, check=False)
    out = console(proc)
    assert proc.returncode != 0
    assert f"{path}: not a readable model file: the file is corrupt or truncated" in out
    assert "Get the classifier file again" in out
    assert "weights_only" not in out and "UnpicklingError" not in out
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------ rows 12, 13


def test_corrupt_model_files_are_named_by_the_embed_jobs(tmp_path):
    pytest.importorskip("esm")
    from tests.model_fixtures import save_fair_checkpoint
    from virnuc_core.engine.models.dnabert_tiny import write_folder
    from virnuc_core.engine.models.esm2_load import random_model

    folder = write_folder(tmp_path / "dnabert-s", fmt="bin")
    weights = folder / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    model, _ = random_model(seed=3, num_layers=2, embed_dim=32, attention_heads=2)
    pt = tmp_path / "esm2_t2_test_UR50D.pt"
    save_fair_checkpoint(model, pt)
    pt.write_bytes(np.random.default_rng(5).bytes(pt.stat().st_size))  # random bytes
    reads = tmp_path / "reads.fa"
    reads.write_text(">r1\n" + "ACGTTGCAAG" * 40 + "\n>r2\n" + "GGCATCCATA" * 30 + "\n")
    write_config(
        tmp_path, samples={"s": str(reads)}, shards=1,
        models={"dnabert": str(folder), "esm": str(pt)},
    )  # fmt: skip
    targets = [f"results/s/embeddings/{m}/shard_0.h5" for m in TINY_WIDTHS]
    proc = run_snakemake(tmp_path, "--keep-going", *targets, check=False)
    out = console(proc)
    assert proc.returncode != 0
    assert (
        f"{weights}: not a readable PyTorch weights file: the file is corrupt or truncated" in out
    )
    assert f"{pt}: not a readable ESM-2 checkpoint file: the file is corrupt or truncated" in out
    assert "weights_only" not in out  # never suggests unsafe loading
    assert "other than tensors" not in out


# ------------------------------------------------------------------ rows 1, 2, 7, 5, 14


def test_sample_path_with_shell_syntax_runs_no_command(clean, tmp_path_factory):
    s = clean / SAMPLE
    summary = (s / "summary.tsv").read_text().splitlines()
    assert len(summary) == 41 and (s / "report/run_summary.html").is_file()
    assert not markers_under(tmp_path_factory.getbasetemp(), REPO), "a path was run as a command"
    assert not any((Path.cwd() / m).exists() for m in MARKERS)
    config = (clean / "config.yaml").read_text()
    assert "$(touch PWNED1)" in config and "`touch PWNED2`" in config  # the path was this one
    # Same calls from the fast and the reference embeddings of the validated sample.
    check = json.loads((s / "validation/summary.json").read_text())["classifier_agreement"]
    assert check == {"n": 40, "agreement": 1.0}


def test_quoted_ids_are_kept_verbatim_end_to_end_and_on_a_rerun(clean):
    s = clean / SAMPLE
    before = {name: (s / name).read_bytes() for name in TABLES}
    frames = [
        line.split("\t")[0] for line in before["prediction_results.tsv"].decode().splitlines()
    ]
    chunks = [line.split("\t")[0] for line in before[TABLES[1]].decode().splitlines()]
    reads = [line.split("\t")[0] for line in before["summary.tsv"].decode().splitlines()]
    with h5py.File(s / "features.h5") as f:
        assert f["ids"].asstr()[()].tolist() == frames[1:]
    for q in QUOTED_IDS.values():
        assert f"{q}_chunk_1F1" in frames or any(f.startswith(f"{q}_chunk_1") for f in frames)
        assert f"{q}_chunk_1" in chunks
        assert reads.count(q) == 1
    # The summary made again from the same predictions: the same bytes.
    run_snakemake(clean, "--forcerun", "summarize_sample")
    assert {name: (s / name).read_bytes() for name in TABLES} == before


def test_replaced_classifier_reruns_predict_and_a_wrong_width_names_the_widths(
    clean, classifier, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(clean, run, symlinks=True)
    assert planned_jobs(run) == {}
    original, stat = classifier.read_bytes(), classifier.stat()
    try:
        # row 5: another classifier at the same path reruns predict and what follows
        save_state(tiny_classifier(sum(TINY_WIDTHS.values()), seed=1), classifier)
        assert planned_jobs(run) == {
            "predict": 1, "validation_summary": 1, "summarize_sample": 1, "report_figures": 1,
            "all": 1,
        }  # fmt: skip
        # row 14: one of another width: the message gives the widths of the models used
        save_state(tiny_classifier(784), classifier)
        proc = run_snakemake(run, check=False)
        out = console(proc)
        assert proc.returncode != 0
        assert (
            f"classifier {classifier} takes 784-wide input, but the features are 160 wide "
            "(96 DNABERT-S + 64 ESM-2)"
        ) in out
        assert "-608" not in out and "-624" not in out
    finally:
        classifier.write_bytes(original)
        os.utime(classifier, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_reads_replaced_by_other_content_with_the_old_mtime_rerun_the_index(clean, tmp_path):
    """cp -p, rsync -a or tar x put other reads in place with their old mtime: the index and
    every rule after it are planned again (the reads' content is a param of index_fasta)."""
    run = tmp_path / "run"
    shutil.copytree(clean, run, symlinks=True)
    assert planned_jobs(run) == {}
    reads = Path(yaml.safe_load((run / "config.yaml").read_text())["samples"]["demo"])
    original, stat = reads.read_bytes(), reads.stat()
    try:
        reads.write_bytes(DEMO_READS.read_bytes())  # other reads (the demo's, unedited)
        os.utime(reads, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        planned = planned_jobs(run)
        assert planned.get("index_fasta") == 1 and planned.get("predict") == 1
        assert planned == planned_jobs(run, "--forcerun", "index_fasta")  # all after it too
    finally:
        reads.write_bytes(original)
        os.utime(reads, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# ------------------------------------------------------------------ rows 3, 4, 16


def test_resume_after_kill9_sets_aside_edited_and_changed_rows(resumed, killed, clean):
    out = console(resumed)
    # Nothing of the old work reached an output: the same as a clean run of the edited reads.
    assert_same_outputs(killed.work, clean)
    work = f"{SAMPLE}/work/esm"  # as the job names it (relative to the run folder)
    # row 4: the changed row fails its block's checksum; shard 0 starts fresh
    assert re.search(
        rf"WARNING set aside work state {work}/shard_0 -> shard_0\.stale-\S+ "
        r"\(block 0 of rows\.bin does not match its checksum \(changed on disk\)\); starting fresh",
        out,
    ), out[-5000:]
    # row 3: the edited base changes shard 1's content digest; shard 1 starts fresh
    assert re.search(
        rf"WARNING set aside work state {work}/shard_1 -> shard_1\.stale-\S+ "
        r"\(fingerprint differs: ",
        out,
    ), out[-5000:]
    for i in range(2):
        log = (killed.work / f"logs/demo/embed_shard/esm_{i}.log").read_text()
        assert log.count("starting: no records committed") == 1 and "resuming:" not in log
        assert re.search(rf"deleted 1 set-aside work folder\(s\): \['shard_{i}\.stale-", log)
    assert not list((killed.work / work).iterdir())  # nothing set aside is left (row 16)


def test_read_added_after_kill9_set_aside_work_is_deleted_once_done(killed, classifier, tmp_path):
    run = killed.snapshot
    before = json.loads((run / SAMPLE / "frames.counts.json").read_text())["frames"]
    reads = tmp_path / "reads.fa"
    text = quoted_reads()
    coding = text.split(f">{QUOTED_IDS['demo21']} ")[1].split(">")[0].split("\n", 1)[1]
    reads.write_text(text + ">added_read\n" + coding)  # a coding read: it adds frames
    write_config(run, samples={"demo": str(reads)}, classifier=str(classifier), **RUN_SETTINGS)
    proc = run_snakemake(run, *ESM_SHARDS)
    out = console(proc)
    after = json.loads((run / SAMPLE / "frames.counts.json").read_text())["frames"]
    assert after > before
    set_aside = [
        i for i in range(2) if f"set aside work state {SAMPLE}/work/esm/shard_{i} -> " in out
    ]
    assert 1 in set_aside  # the last shard's range grew
    for i in set_aside:
        log = (run / f"logs/demo/embed_shard/esm_{i}.log").read_text()
        assert re.search(rf"deleted 1 set-aside work folder\(s\): \['shard_{i}\.stale-", log)
    assert not list((run / SAMPLE / "work/esm").iterdir())  # no set-aside folder left, no work
    with h5py.File(run / ESM_SHARDS[1]) as f:
        assert f["embeddings"].shape[0] == after - shard_range(run, "demo", "esm", 1)[0]


# ------------------------------------------------------------------ issue 34: a cut-short run


def test_plain_rerun_redoes_a_job_left_incomplete(tmp_path):
    """A run killed while a job wrote (Ctrl-C, kill, a disk that filled late) leaves the job's
    outputs marked incomplete; the plain command again redoes that job (rerun-incomplete in
    profiles/default) instead of stopping with IncompleteFilesException."""
    write_config(tmp_path)
    target = f"{SAMPLE}/frames.counts.json"
    run_snakemake(tmp_path, target)
    # What Snakemake leaves when it dies while index_fasta runs: the marker of an output (file
    # persistence: .snakemake/incomplete/<urlsafe base64 of the path>).
    marker = (
        tmp_path
        / ".snakemake/incomplete"
        / base64.urlsafe_b64encode(f"{SAMPLE}/frames.fa".encode()).decode()
    )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"external_jobid": None}))
    (tmp_path / SAMPLE / "frames.fa").write_text(">cut short\nACG")  # half written
    proc = run_snakemake(tmp_path, target, check=False)
    out = console(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "IncompleteFilesException" not in out
    assert re.search(r"index_fasta\s+1", out), out[-3000:]  # the job ran again
    assert (tmp_path / SAMPLE / "frames.fa").read_text().startswith(">demo00")
    assert not marker.exists()


@pytest.mark.parametrize("profile", ["default", "local-2gpu", "slurm"])
def test_every_profile_reruns_incomplete_jobs(profile):
    (path,) = (REPO / "profiles" / profile).glob("config*.yaml")
    assert yaml.safe_load(path.read_text())["rerun-incomplete"] is True
