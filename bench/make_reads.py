"""Deterministic synthetic reads: the bundled demo FASTA, the CPU benchmark set, GPU test sets.

Kinds of read:
  random  uniform random bases (a 500-base chunk almost never has a stop-free frame)
  coding  random sense codons (no stop codon in the first reading frame)
  open    no stop codon in any of the six frames (every frame of every chunk is kept: the
          heaviest load for the embedding stages)
  mixed   coding, open and random in turn
  realistic  85% coding, 15% random, as reads of a prokaryote-rich metagenome (genomes about
          85-90% coding): about one kept frame per 500-base read; with --duplicates, a share of
          the reads appears again later under new ids (PCR and optical duplicates)

    python bench/make_reads.py --preset demo --out config/demo/reads.fa
    python bench/make_reads.py --preset bench --out /tmp/bench.fa           # 100,000 x 500 random
    python bench/make_reads.py --preset gpu --n 200000 --out /tmp/gpu.fa.gz # open reads, 150-1500
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import sys
from pathlib import Path

import numpy as np

BASES = np.frombuffer(b"ACGT", np.uint8)
KINDS = ("random", "coding", "open", "mixed", "realistic")
_STOPS = {"TAA", "TAG", "TGA"}
_SENSE = np.array(
    [
        list(c.encode())
        for c in map("".join, itertools.product("ACGT", repeat=3))
        if c not in _STOPS
    ],
    np.uint8,
)
# A stop in a reverse frame is TTA, CTA or TCA on the forward strand.
_FORBIDDEN = _STOPS | {"TTA", "CTA", "TCA"}


def _open_choices() -> tuple[np.ndarray, np.ndarray]:
    """Per two-base context (16), the bases that do not complete a forbidden triplet."""
    allowed = np.zeros((16, 4), np.uint8)
    count = np.zeros(16, np.int64)
    for ctx, (a, b) in enumerate(itertools.product("ACGT", repeat=2)):
        ok = [i for i, c in enumerate("ACGT") if a + b + c not in _FORBIDDEN]
        allowed[ctx] = (ok * 4)[:4]
        count[ctx] = len(ok)
    return allowed, count


def random_bases(rng: np.random.Generator, n_reads: int, length: int) -> np.ndarray:
    return BASES[rng.integers(0, 4, size=(n_reads, length))]


def coding_bases(rng: np.random.Generator, n_reads: int, length: int) -> np.ndarray:
    codons = _SENSE[rng.integers(0, len(_SENSE), size=(n_reads, -(-length // 3)))]
    return codons.reshape(n_reads, -1)[:, :length]


def open_bases(rng: np.random.Generator, n_reads: int, length: int) -> np.ndarray:
    """A Markov chain that never writes a triplet of _FORBIDDEN (always >= 2 choices)."""
    allowed, count = _open_choices()
    digits = np.zeros((n_reads, length), np.uint8)
    digits[:, : min(2, length)] = rng.integers(0, 4, size=(n_reads, min(2, length)))
    u = rng.random((n_reads, max(0, length - 2)))
    for j in range(2, length):
        ctx = digits[:, j - 2].astype(np.int64) * 4 + digits[:, j - 1]
        digits[:, j] = allowed[ctx, (u[:, j - 2] * count[ctx]).astype(np.int64)]
    return BASES[digits]


_MAKERS = {"random": random_bases, "coding": coding_bases, "open": open_bases}


def make_reads(
    n: int,
    min_len: int,
    max_len: int,
    kind: str = "random",
    seed: int = 0,
    prefix: str = "read",
    lower: tuple[int, ...] = (),
    with_n: tuple[int, ...] = (),
) -> list[tuple[str, str]]:
    """``n`` reads as (header, sequence), deterministic in all arguments.

    ``kind="mixed"`` cycles coding, open, random. Reads numbered in ``lower`` are lower-cased
    (the first half only for odd numbers); reads in ``with_n`` get a few runs of N.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    if kind == "realistic":
        kinds = np.where(rng.random(n) < 0.85, "coding", "random").tolist()
    else:
        kinds = [("coding", "open", "random")[i % 3] if kind == "mixed" else kind for i in range(n)]
    seqs: list[str] = [""] * n
    for name, maker in _MAKERS.items():
        idx = [i for i, k in enumerate(kinds) if k == name]
        if idx:
            block = maker(rng, len(idx), int(lengths[idx].max()))
            for row, i in enumerate(idx):
                seqs[i] = block[row, : lengths[i]].tobytes().decode()
    for i in lower:
        cut = len(seqs[i]) // 2 if i % 2 else len(seqs[i])
        seqs[i] = seqs[i][:cut].lower() + seqs[i][cut:]
    for i in with_n:
        seq = list(seqs[i])
        for pos in rng.integers(0, len(seq), size=3):
            seq[pos : pos + 5] = "N" * len(seq[pos : pos + 5])
        seqs[i] = "".join(seq)
    width = len(str(n - 1))
    return [
        (f"{prefix}{i:0{width}d} kind={kinds[i]} length={len(s)}", s) for i, s in enumerate(seqs)
    ]


PRESETS = {
    "demo": dict(
        n=40,
        min_len=150,
        max_len=1500,
        kind="mixed",
        seed=1,
        prefix="demo",
        lower=(4, 9),
        with_n=(6, 13),
    ),
    "bench": dict(n=100_000, min_len=500, max_len=500, kind="random", seed=0, prefix="read"),
    "gpu": dict(n=100_000, min_len=150, max_len=1500, kind="open", seed=2, prefix="gpu"),
}


def with_duplicates(
    reads: list[tuple[str, str]], share: float, seed: int = 0
) -> list[tuple[str, str]]:
    """``reads`` plus copies of a ``share`` of them, each placed later, under new ids."""
    rng = np.random.default_rng(seed)
    out = list(reads)
    picks = np.sort(rng.choice(len(reads), int(share * len(reads)), replace=False))
    for j, i in enumerate(picks.tolist()):
        pos = int(rng.integers(i + 1, len(out) + 1))
        out.insert(pos, (f"dup{j} of={reads[i][0].split()[0]}", reads[i][1]))
    return out


def write_reads(reads: list[tuple[str, str]], out: Path) -> None:
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(out, "wt") as handle:
        for header, seq in reads:
            handle.write(f">{header}\n")
            for i in range(0, len(seq), 70):
                handle.write(seq[i : i + 70] + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), help="start from these settings")
    ap.add_argument("--n", type=int)
    ap.add_argument("--min-len", type=int)
    ap.add_argument("--max-len", type=int)
    ap.add_argument("--kind", choices=KINDS)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--duplicates", type=float, default=0.0, help="share of reads repeated")
    ap.add_argument("--out", type=Path, required=True, help="FASTA to write (.gz: gzip)")
    args = ap.parse_args(argv)
    params = dict(PRESETS.get(args.preset, {}))
    for key in ("n", "min_len", "max_len", "kind", "seed"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    missing = {"n", "min_len", "max_len"} - params.keys()
    if missing:
        ap.error(f"give --preset or all of: {', '.join(sorted(missing))}")
    reads = make_reads(**params)
    if args.duplicates:
        reads = with_duplicates(reads, args.duplicates, params.get("seed", 0))
    write_reads(reads, args.out)
    print(f"wrote {params['n']} reads to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
