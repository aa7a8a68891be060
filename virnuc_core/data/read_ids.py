"""Every read id of a sample unique: ids remembered as 64-bit hashes, repeats confirmed.

:class:`IdHashes` keeps one hash per read in compact arrays (8 bytes a read); once the last
file ends, :func:`check_duplicates` sorts them and, only where two hashes are equal, reads the
sample again to compare the real ids: the usual sample costs no second pass. The error names
the first read (in sample order) whose id an earlier read has, and where that earlier read is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from virnuc_core.data.records import InputError, ReadBatch


def numbered(
    batches_of: Callable[[object, int], Iterable[ReadBatch]], sources: Sequence
) -> Iterator[ReadBatch]:
    """The batches of each source in turn, ``batches_of(source, first)`` told the sample-wide
    number of its first read."""
    first = 0
    for source in sources:
        for batch in batches_of(source, first):
            first += len(batch)
            yield batch


def unique(
    batches: Iterable[ReadBatch], reread: Callable[[], Iterable[ReadBatch]]
) -> Iterator[ReadBatch]:
    """``batches`` as they come, their ids hashed; once they end, :func:`check_duplicates`
    (``reread``: the same stream again, for a second pass when two hashes are equal)."""
    hashes = IdHashes()
    for batch in batches:
        hashes.add(batch.ids)
        yield batch
    check_duplicates(hashes.array(), reread)


# Duplicate-id candidates confirmed per extra pass (only hash collisions need a second one).
_CONFIRM_AT_ONCE = 1024


class IdHashes:
    """The 64-bit hashes of every id seen, in read order, in compact arrays.

    Python's ``hash`` of a str (SipHash, salted per process) is fine here: both passes over the
    files run in this process, and a collision only costs a comparison of the real ids.
    """

    _SPILL = 1 << 20  # small per-batch arrays are merged into blocks of about this many

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._small: list[np.ndarray] = []
        self._count = 0

    def add(self, ids: list[str]) -> None:
        self._small.append(np.fromiter(map(hash, ids), np.int64, len(ids)))
        self._count += len(ids)
        if self._count >= self._SPILL:
            self._blocks.append(np.concatenate(self._small))
            self._small, self._count = [], 0

    def array(self) -> np.ndarray:
        parts, self._blocks, self._small = self._blocks + self._small, [], []
        return np.concatenate(parts) if parts else np.empty(0, np.int64)


def check_duplicates(hashes: np.ndarray, reread: Callable[[], Iterable[ReadBatch]]) -> None:
    """Raise for the first read whose id an earlier read has; ``hashes``: one per read, in
    sample order; ``reread()`` streams the sample's reads again (only when two hashes are equal)."""
    if hashes.size < 2:
        return
    ordered = np.sort(hashes)
    if not (ordered[1:] == ordered[:-1]).any():  # the usual case: done, no second pass
        return
    del ordered
    order = np.argsort(hashes, kind="stable")  # equal hashes stay in read order
    ordered = hashes[order]
    del hashes
    same = ordered[1:] == ordered[:-1]
    del ordered
    repeats = np.flatnonzero(same) + 1  # sorted positions whose hash the previous one has
    run_starts = np.flatnonzero(np.concatenate([[True], ~same]))
    starts = run_starts[np.searchsorted(run_starts, repeats, side="right") - 1]
    by_read = np.argsort(order[repeats], kind="stable")  # repeats in read order
    for k in range(0, by_read.size, _CONFIRM_AT_ONCE):
        pick = by_read[k : k + _CONFIRM_AT_ONCE]
        _confirm(reread, order, repeats[pick], starts[pick])


def _confirm(
    reread: Callable[[], Iterable[ReadBatch]], order: np.ndarray, repeats: np.ndarray,
    starts: np.ndarray,
) -> None:  # fmt: skip
    """Compare the real ids of these repeated hashes (in read order) with the earlier reads of
    the same hash; raise for the first true duplicate."""
    upto: dict[int, int] = {}  # run start -> its last repeat to confirm
    for j, s in zip(repeats.tolist(), starts.tolist(), strict=True):
        upto[s] = max(upto.get(s, s), j)
    wanted = np.unique(np.concatenate([order[s : j + 1] for s, j in upto.items()]))
    found = _locate(reread, wanted)
    for j, s in zip(repeats.tolist(), starts.tolist(), strict=True):
        rid, path, line = found[int(order[j])]
        for earlier in order[s:j].tolist():  # same hash, earlier in the sample
            first_id, first_path, first_line = found[earlier]
            if first_id == rid:
                where = f"line {first_line}" + ("" if first_path == path else f" of {first_path}")
                raise InputError(path, line, rid, f"duplicate id (first at {where})")


def _locate(
    reread: Callable[[], Iterable[ReadBatch]], wanted: np.ndarray
) -> dict[int, tuple[str, str, int]]:
    """Id, file and line of the reads with these sample-wide numbers (sorted), read again."""
    found: dict[int, tuple[str, str, int]] = {}
    for batch in reread():
        lo, hi = np.searchsorted(wanted, [batch.first, batch.first + len(batch)])
        for number in wanted[lo:hi].tolist():
            k = number - batch.first
            found[number] = (batch.ids[k], batch.path, int(batch.lines[k]))
        if batch.first + len(batch) > wanted[-1]:
            break
    return found
