"""A frames index (frames.index.npy) for hand-made prediction rows, built here from the FASTA.

Read number = the read's position in the FASTA (Biopython), chunk = the id's chunk number - 1,
found forwards from each read's chunk ids (spec §1 written out again); a frame id of no read of
the FASTA gets the read number just past the last read. Only ``read`` and ``chunk`` are filled.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from Bio import SeqIO

from virnuc_core.data.index import INDEX_DTYPE


def index_rows(fasta, ids, chunk_length: int) -> np.ndarray:
    """Index rows for the frame ids ``ids`` (prediction row order) of the reads of ``fasta``."""
    owner, reads = {}, 0
    for number, rec in enumerate(SeqIO.parse(fasta, "fasta")):
        n = max(1, math.ceil(len(rec.seq) / chunk_length))
        owner.update({f"{rec.id}_chunk_{k}": (number, k - 1) for k in range(1, n + 1)})
        reads = number + 1
    rows = np.zeros(len(ids), INDEX_DTYPE)
    for i, frame_id in enumerate(ids):
        rows[i]["read"], rows[i]["chunk"] = owner.get(frame_id[:-2], (reads, 0))
    return rows


def write_index(path, rows: np.ndarray) -> Path:
    np.save(path, rows, allow_pickle=False)
    return Path(path)


def frames_index(fasta, predictions, chunk_length: int) -> Path:
    """``<predictions>.index.npy`` for the rows of prediction_results.tsv ``predictions``."""
    with open(predictions, newline="") as handle:
        ids = [row["Sequence_ID"] for row in csv.DictReader(handle, delimiter="\t")]
    path = Path(predictions).with_suffix(".index.npy")
    return write_index(path, index_rows(fasta, ids, chunk_length))
