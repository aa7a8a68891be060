"""Reading a sample's reads on one CPU core: virnuc_core.data.reads on FASTA and FASTQ, plain and
gzip.

Writes 1,000,000 seeded random reads of 500 bases (by default) with a generator, in four files
(plain FASTA with one sequence line per read, gzip FASTA, plain FASTQ, gzip FASTQ) plus plain
FASTA wrapped at 70 columns, and times on each, in CPU seconds (``time.process_time``, this one
process pinned to one core):

  raw        decompressed bytes only, in the reader's blocks (the floor: I/O + decompression)
  parse      iter_read_batches(check_duplicates=False)
  reads      iter_read_batches(): parse + the duplicate-id check (the default)
  + frames   the same, each batch through frames.select_frames(ids, seqs, chunk_length)

and, for scale on the same machine and moment: select_frames alone over in-memory batches, and
the previous reader (recorded in
bench/results/2026-12-02-read-inputs-cpu/read_inputs_cpu.json; since removed) on the
plain FASTA. Runs of a file alternate with the others; the best of ``--repeats`` counts.

    python -m bench.read_inputs [--reads 1000000] \
        [--out bench/results/2026-12-02-read-inputs-cpu/read_inputs_cpu.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import cProfile  # noqa: E402
import datetime  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench._harness import cpu_info  # noqa: E402
from virnuc_core.data import reads  # noqa: E402
from virnuc_core.data.frames import DEFAULT_BATCH_BASES, select_frames  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "read_inputs_cpu.json"
BASES = np.frombuffer(b"ACGT", np.uint8)
QUALS = np.frombuffer(b"F:,#", np.uint8)  # Illumina's binned qualities
STEP = 20_000  # reads generated at a time


# -- the input files ---------------------------------------------------------------------------


def rows(
    rng: np.random.Generator,
    qrng: np.random.Generator,
    first: int,
    n: int,
    length: int,
    fastq: bool,
) -> bytes:
    """``n`` records as one bytes object; every header has the same width (numbers padded).
    Qualities come from their own generator: FASTA and FASTQ files hold the same reads."""
    heads = b"".join(
        (b"@read%08d 1:N:0:1\n" if fastq else b">read%08d length=500\n") % i
        for i in range(first, first + n)
    )
    heads = np.frombuffer(heads, np.uint8).reshape(n, -1)
    parts = [heads, BASES[rng.integers(0, 4, size=(n, length))], np.full((n, 1), ord("\n"))]
    if fastq:
        plus = np.frombuffer(b"+\n", np.uint8)
        quals = QUALS[qrng.choice(4, size=(n, length), p=[0.85, 0.1, 0.04, 0.01])]
        parts += [np.broadcast_to(plus, (n, 2)), quals, np.full((n, 1), ord("\n"))]
    return np.hstack([p.astype(np.uint8) for p in parts]).tobytes()


def wrapped(block: bytes, width: int) -> bytes:
    """FASTA rows with the sequence lines cut every ``width`` bases."""
    out = []
    for record in block.split(b"\n>"):
        head, _, seq = record.partition(b"\n")
        seq = seq.rstrip(b"\n")
        out.append(head + b"\n" + b"\n".join(seq[i : i + width] for i in range(0, len(seq), width)))
    return b"\n>".join(out) + b"\n"


def generate(n: int, length: int, fastq: bool, seed: int) -> Iterator[bytes]:
    rng, qrng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    for first in range(0, n, STEP):
        yield rows(rng, qrng, first, min(STEP, n - first), length, fastq)


def write_inputs(folder: Path, n: int, length: int, level: int) -> dict[str, Path]:
    """The five input files (same reads in FASTA and FASTQ; gzip at ``level``)."""
    files = {
        "plain FASTA": folder / "reads.fa",
        "plain FASTA, 70-column lines": folder / "reads.wrapped.fa",
        "gzip FASTA": folder / "reads.fa.gz",
        "plain FASTQ": folder / "reads.fq",
        "gzip FASTQ": folder / "reads.fq.gz",
    }
    for fastq in (False, True):
        name = "FASTQ" if fastq else "FASTA"
        with (
            open(files[f"plain {name}"], "wb") as plain,
            gzip.open(files[f"gzip {name}"], "wb", compresslevel=level) as packed,
        ):
            for block in generate(n, length, fastq, seed=0):
                plain.write(block)
                packed.write(block)
    with open(files["plain FASTA, 70-column lines"], "wb") as out:
        for block in generate(n, length, False, seed=0):
            out.write(wrapped(block, 70))
    return files


# -- what is timed -----------------------------------------------------------------------------


def raw(path: Path) -> int:
    """Bytes of the decompressed stream, read in the reader's blocks."""
    total = 0
    with reads._open(path) as (_, stream):
        while True:
            block, failure = reads._read_block(stream, reads._BLOCK_BYTES)
            if failure is not None:
                raise failure
            if not block:
                return total
            total += len(block)


def parse(path: Path) -> int:
    return sum(len(b) for b in reads.iter_read_batches([path], check_duplicates=False))


def parse_checked(path: Path) -> int:
    return sum(len(b) for b in reads.iter_read_batches([path]))


def with_frames(path: Path, chunk_length: int) -> tuple[int, int]:
    n = frames = 0
    for batch in reads.iter_read_batches([path]):
        n += len(batch)
        frames += len(select_frames(batch.ids, batch.seqs, chunk_length).ids)
    return n, frames


def cpu(fn: Callable, *args) -> tuple[float, object]:
    start = time.process_time()
    out = fn(*args)
    return time.process_time() - start, out


def measure(files: dict[str, Path], chunk_length: int, repeats: int, limit: int) -> dict:
    """Every method on every file, ``repeats`` rounds; within a round each file runs all its
    methods one after the other, and the references run with the plain FASTA, so that every
    comparison is made at about the same moment (the dev machine's load changes)."""
    methods = {
        "raw": raw,
        "parse": parse,
        "reads": parse_checked,
        "reads + frames": lambda p: with_frames(p, chunk_length),
    }
    batches = in_memory(files["plain FASTA"], limit)
    references = {
        "select_frames alone": lambda _: frames_alone(batches, chunk_length),
    }
    seconds: dict[str, dict[str, list[float]]] = {}
    outputs: dict[str, dict[str, object]] = {}
    for _ in range(repeats):
        for name, path in files.items():
            todo = {**methods, **references} if name == "plain FASTA" else methods
            for method, fn in todo.items():
                dt, out = cpu(fn, path)
                seconds.setdefault(name, {}).setdefault(method, []).append(dt)
                outputs.setdefault(name, {})[method] = out
    return {"seconds": seconds, "outputs": outputs}


def in_memory(path: Path, limit: int) -> list[tuple[list[str], list[str]]]:
    """The first batches of ``path`` (``limit`` reads or a little more), kept in memory."""
    batches, n = [], 0
    for batch in reads.iter_read_batches([path], check_duplicates=False):
        batches.append((batch.ids, batch.seqs))
        n += len(batch)
        if n >= limit:
            break
    return batches


def frames_alone(batches: list[tuple[list[str], list[str]]], chunk_length: int) -> int:
    for ids, seqs in batches:
        select_frames(ids, seqs, chunk_length)
    return sum(len(ids) for ids, _ in batches)


def profile(path: Path, top: int = 12) -> list[dict]:
    """Where the parse of one file spends its time (cProfile, own time of each function)."""
    prof = cProfile.Profile()
    prof.enable()
    parse_checked(path)
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(s[2] for s in stats.values())
    rows_ = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{Path(f).name}:{line}({fn})" if f != "~" else fn,
            "calls": s[1],
            "share": round(s[2] / total, 3),
        }
        for (f, line, fn), s in rows_
    ]


# -- harness -----------------------------------------------------------------------------------


def summarise(measured: dict, n: int) -> dict[str, dict[str, float]]:
    """Best-of-repeats reads/s (per core: one process, one thread) for every row."""
    rates: dict[str, dict[str, float]] = {}
    for name, per_method in measured["seconds"].items():
        for method, times in per_method.items():
            out = measured["outputs"][name][method]
            count = out if method == "select_frames alone" else n
            rates.setdefault(name, {})[method] = round(count / min(times), 1)
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reads", type=int, default=1_000_000)
    ap.add_argument("--length", type=int, default=500)
    ap.add_argument("--chunk-length", type=int, default=500)
    ap.add_argument("--gzip-level", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--reference-reads", type=int, default=200_000)
    ap.add_argument("--dir", type=Path, help="where to write the inputs (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    core = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {core})  # one core
    folder = Path(tempfile.mkdtemp(prefix="read-inputs-", dir=args.dir))
    try:
        start = time.process_time()
        files = write_inputs(folder, args.reads, args.length, args.gzip_level)
        made = time.process_time() - start
        sizes = {name: path.stat().st_size for name, path in files.items()}
        load_before = os.getloadavg()
        measured = measure(files, args.chunk_length, args.repeats, args.reference_reads)
        where = {name: profile(files[name]) for name in ("plain FASTA", "gzip FASTQ")}
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = report(args, core, made, sizes, measured, where, load_before, load_after)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if result["outputs_agree"] else 1


def report(args, core, made, sizes, measured, where, load_before, load_after) -> dict:
    n = args.reads
    rates = summarise(measured, n)
    outputs = measured["outputs"]
    agree = all(
        out["parse"] == out["reads"] == n and out["reads + frames"][0] == n
        for out in outputs.values()
    )
    frames = {out["reads + frames"][1] for out in outputs.values()}
    agree = agree and len(frames) == 1
    for name, per in rates.items():
        print(f"{name}: " + ", ".join(f"{m} {r:,.0f}" for m, r in per.items()))
    return {
        "benchmark": "reading a sample's reads, one CPU core, CPU seconds (time.process_time)",
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**cpu_info(), "pinned_core": core},
        "loadavg_before_after": [round(x, 2) for x in (*load_before, *load_after)],
        "data": {
            "reads": n,
            "read_length": args.length,
            "kind": "uniform random ACGT, seed 0",
            "headers": "'>read%08d length=500' / '@read%08d 1:N:0:1', bare '+' lines",
            "gzip_level": args.gzip_level,
            "file_bytes": sizes,
            "cpu_seconds_to_write_inputs": round(made, 1),
            "chunk_length": args.chunk_length,
            "frames_kept": frames.pop() if len(frames) == 1 else sorted(frames),
            "batch_bases": DEFAULT_BATCH_BASES,
            "block_bytes": reads._BLOCK_BYTES,
        },
        "methods": {
            "raw": "decompressed bytes only, in the reader's blocks",
            "parse": "iter_read_batches(check_duplicates=False)",
            "reads": "iter_read_batches(): parse + duplicate-id check",
            "reads + frames": "iter_read_batches() -> frames.select_frames per batch",
            "select_frames alone": f"in-memory batches, first {args.reference_reads:,} reads",
        },
        "repeats": args.repeats,
        "cpu_seconds": measured["seconds"],
        "reads_per_cpu_second": rates,
        "profile_own_time_share": where,
        "outputs_agree": agree,
    }


if __name__ == "__main__":
    raise SystemExit(main())
