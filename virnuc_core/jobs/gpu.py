"""Which device an embedding job uses.

Rules, in order (:func:`claim_device`):

1. ``prefer_cuda=False`` or no CUDA GPU visible -> ``"cpu"``, no locks.
2. A scheduler chose the GPU -- ``CUDA_VISIBLE_DEVICES`` is set, or ``SLURM_JOB_ID`` is -> the
   first visible GPU, ``"cuda:0"``, no locks. The scheduler already isolated this job's GPU(s);
   indexes would mean different physical GPUs in different jobs, so local locks would be wrong.
3. Otherwise (a local run sharing the machine's GPUs between concurrent jobs) the job claims a
   slot: one lock file per visible GPU, ``<lock_dir>/gpu<i>.lock``, taken with
   ``flock(LOCK_EX | LOCK_NB)`` on a file descriptor held for the life of the claim. The kernel
   drops the lock when the descriptor is closed, however the process ends (``kill -9`` too), so
   a slot is never left taken by a dead job. Slots are tried in order; if all are busy the job
   logs that it waits and polls (about every second) until ``timeout``, then raises
   :class:`GpuClaimTimeout`. The lock file holds the holder's pid and host for humans; it is
   never deleted (deleting a lock file others may be waiting on would break the exclusion).
4. A ``shared`` claim (a small model's job, config ``share_gpu``) runs beside the job holding a
   GPU's slot: it takes the first free shared slot, ``<lock_dir>/gpu<i>.shared<k>.lock``, in the
   order slot 0 of every GPU, then slot 1 of every GPU, ... (``k < SHARED_SLOTS``), so shared
   jobs started together spread over the GPUs. Snakemake does not count these jobs against
   ``--resources gpu`` (their rule asks for ``gpu=0``): the slots only place them, on the first
   ``limit`` GPUs (the workflow passes its ``--resources gpu``), where the run's own counted
   jobs go too unless another run holds those GPUs' slots.

For local runs, do **not** set ``CUDA_VISIBLE_DEVICES`` in the workflow or its jobs: it would
select rule 2 and every job would run on ``cuda:0``. Without it, slot ``i`` is torch device
index ``i`` (``cuda:i``). Snakemake's ``--resources gpu=N`` keeps at most N jobs running; the
slots decide which GPU each one gets. Jobs of separate workflows (or users) on one machine share
slots only if they share ``lock_dir`` (see :func:`virnuc_core.settings.lock_dir`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from virnuc_core.util.files import hold_lock_fd, release_lock_fd

log = logging.getLogger("virnuc.gpu")

SCHEDULER_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")
SHARED_SLOTS = 8  # shared jobs on one GPU at once; a ninth waits for one of them to end


class GpuClaimTimeout(TimeoutError):
    """Every GPU slot stayed busy for the whole timeout."""


@dataclass(frozen=True)
class DeviceClaim:
    """The device a job runs on.

    ``device`` is a torch device string (``"cuda:1"``, ``"cpu"``); ``index`` the CUDA device
    index (``None`` on CPU); ``source`` says how it was chosen: ``"cpu"``, ``"scheduler"``,
    ``"lock"`` or ``"shared lock"``; ``lock_path`` the held lock file (only for the locks).
    """

    device: str
    index: int | None
    source: str
    lock_path: str | None = None

    def __str__(self) -> str:
        return self.device


def count_cuda_devices() -> int:
    """Visible CUDA devices according to torch (0 when CUDA is unavailable)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def no_gpu_reason(
    environ: Mapping[str, str] | None = None, nvidia: str | os.PathLike = "/proc/driver/nvidia/gpus"
) -> str | None:
    """Why this machine's jobs would see no GPU, found without importing torch (which takes
    seconds): ``CUDA_VISIBLE_DEVICES`` empty (or -1), else no GPU under ``nvidia`` (the NVIDIA
    driver's list), no ROCm device and ``nvidia-smi -L`` listing none. None when a GPU is or
    may be visible (the check errs that way)."""
    env = os.environ if environ is None else environ
    chosen = env.get("CUDA_VISIBLE_DEVICES")
    if chosen is not None and chosen.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES is {chosen!r}"
    with contextlib.suppress(OSError):
        if any(Path(nvidia).iterdir()):
            return None
    if Path("/dev/kfd").exists():  # an AMD GPU (ROCm): torch sees it as CUDA
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA driver: no nvidia-smi, nothing in /proc/driver/nvidia/gpus"
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if any(line.startswith("GPU ") for line in listed.splitlines()):
        return None
    return "nvidia-smi -L lists no GPU"


def scheduler_var(environ: Mapping[str, str] | None = None) -> str | None:
    """The environment variable showing that a scheduler chose our GPU, or None."""
    env = os.environ if environ is None else environ
    return next((name for name in SCHEDULER_VARS if name in env), None)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if someone else holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # a lock file made by another user: flock needs no write access
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        hold_lock_fd(fd)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # for humans only; fails on a read-only fd
        os.ftruncate(fd, 0)
        note = f"pid {os.getpid()} host {socket.gethostname()} since {time.ctime()}\n"
        os.pwrite(fd, note.encode(), 0)
    return fd


def _holders(paths: list[Path]) -> str:
    out = []
    for path in paths:
        try:
            text = path.read_text().strip() or "?"
        except OSError:
            text = "?"
        out.append(f"{path.name}: {text}")
    return "; ".join(out)


def _wait_for_slot(paths: list[Path], timeout: float | None, poll: float) -> tuple[int, int]:
    """(slot index, fd holding its lock): the first free slot, polling until ``timeout``."""
    start = time.monotonic()
    next_note = start
    while True:
        for index, path in enumerate(paths):
            fd = _try_lock(path)
            if fd is not None:
                return index, fd
        now = time.monotonic()
        if timeout is not None and now - start >= timeout:
            raise GpuClaimTimeout(
                f"all {len(paths)} GPU slots in {paths[0].parent} stayed busy for {timeout:g} s "
                f"({_holders(paths)})"
            )
        if now >= next_note:
            log.info(
                "all %d GPU slots in %s are busy; waiting (%s)",
                len(paths),
                paths[0].parent,
                _holders(paths),
            )
            next_note = now + 60.0
        time.sleep(poll if timeout is None else max(0.0, min(poll, start + timeout - now)))


@contextlib.contextmanager
def claim_device(
    lock_dir: str | os.PathLike,
    prefer_cuda: bool = True,
    *,
    n_gpus: int | None = None,
    timeout: float | None = 3600.0,
    poll: float = 1.0,
    environ: Mapping[str, str] | None = None,
    shared: bool = False,
    limit: int = 0,
) -> Iterator[DeviceClaim]:
    """Choose this job's device (see the module docs) and hold it for the ``with`` block.

    ``shared``: take a shared slot (rule 4) instead of a GPU's own slot, on one of the first
    ``limit`` GPUs (0, or more than are visible: any visible one): the workflow passes its
    ``--resources gpu``, so a run given one GPU keeps its shared jobs on GPU 0.
    ``n_gpus``: visible CUDA devices; ``None`` asks torch (tests inject a number).
    ``timeout``: seconds to wait for a free slot (``None``: forever). ``environ``: the
    environment to inspect for a scheduler (default ``os.environ``).
    """
    if not prefer_cuda:
        yield DeviceClaim("cpu", None, "cpu")
        return
    if n_gpus is None:
        n_gpus = count_cuda_devices()
    if n_gpus <= 0:
        log.info("no CUDA device visible: using the CPU")
        yield DeviceClaim("cpu", None, "cpu")
        return
    var = scheduler_var(environ)
    if var is not None:
        if n_gpus > 1:
            log.warning("%s is set and %d GPUs are visible: using only cuda:0", var, n_gpus)
        log.info("%s is set: using the scheduler's GPU, cuda:0", var)
        yield DeviceClaim("cuda:0", 0, "scheduler")
        return

    lock_root = Path(lock_dir)
    lock_root.mkdir(parents=True, exist_ok=True)
    if shared:
        n_gpus = min(n_gpus, limit) if limit > 0 else n_gpus
        paths = [lock_root / f"gpu{i}.shared{k}.lock" for k in range(SHARED_SLOTS)
                 for i in range(n_gpus)]  # fmt: skip
    else:
        paths = [lock_root / f"gpu{i}.lock" for i in range(n_gpus)]
    start = time.monotonic()
    slot, fd = _wait_for_slot(paths, timeout, poll)
    path, index = paths[slot], slot % n_gpus
    waited = time.monotonic() - start
    kind = "shared lock" if shared else "lock"
    log.info("claimed GPU %d's %s %s after %.1f s", index, kind, path.name, waited)
    try:
        yield DeviceClaim(f"cuda:{index}", index, kind, str(path))
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        release_lock_fd(fd)  # releases the flock
