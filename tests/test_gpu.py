"""GPU slot claiming, tested without a GPU by injecting the device count."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import time

import pytest

from virnuc_core.jobs.gpu import DeviceClaim, GpuClaimTimeout, claim_device, no_gpu_reason

CTX = mp.get_context("fork")
NO_SCHEDULER: dict[str, str] = {}


def _holder(lock_dir, n_gpus, barrier, out, release, timeout=10.0):
    """Claim a slot (after the barrier), report it, hold it until ``release`` is set."""
    if barrier is not None:
        barrier.wait()
    kw = dict(n_gpus=n_gpus, environ=NO_SCHEDULER, poll=0.05, timeout=timeout)
    with claim_device(lock_dir, **kw) as c:
        out.put((os.getpid(), c.index, c.device, time.monotonic()))
        release.wait(30)


def _start(lock_dir, n_gpus, out, barrier=None):
    release = CTX.Event()
    proc = CTX.Process(target=_holder, args=(lock_dir, n_gpus, barrier, out, release))
    proc.start()
    return proc, release


def _stop(*procs):
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert all(p.exitcode in (0, -signal.SIGKILL) for p in procs)


def test_two_processes_get_different_slots(tmp_path):
    for round_ in range(5):
        lock_dir = tmp_path / f"locks{round_}"
        out = CTX.Queue()
        barrier = CTX.Barrier(2)
        (a, ra), (b, rb) = _start(lock_dir, 2, out, barrier), _start(lock_dir, 2, out, barrier)
        got = [out.get(timeout=10), out.get(timeout=10)]
        assert sorted(g[1] for g in got) == [0, 1]
        assert sorted(g[2] for g in got) == ["cuda:0", "cuda:1"]
        for g in got:  # each lock file names its holder
            assert f"pid {g[0]} " in (lock_dir / f"gpu{g[1]}.lock").read_text()
        ra.set()
        rb.set()
        _stop(a, b)


def test_third_waits_for_a_free_slot(tmp_path):
    out = CTX.Queue()
    a, ra = _start(tmp_path, 2, out)
    b, rb = _start(tmp_path, 2, out)
    holders = {out.get(timeout=10)[0]: None for _ in range(2)}
    c, rc = _start(tmp_path, 2, out)
    with pytest.raises(queue.Empty):
        out.get(timeout=1.0)  # both slots busy: the third must wait
    released_at = time.monotonic()
    ra.set()  # release a's slot
    pid, index, _, claimed_at = out.get(timeout=5)
    assert pid == c.pid and pid not in holders
    assert claimed_at >= released_at
    a.join(10)
    rb.set()
    rc.set()
    _stop(a, b, c)


def _claim_and_sleep(lock_dir, out):
    with claim_device(lock_dir, n_gpus=1, environ=NO_SCHEDULER, poll=0.05) as c:
        out.put(c.index)
        time.sleep(60)


def test_sigkill_frees_the_slot(tmp_path):
    out = CTX.Queue()
    proc = CTX.Process(target=_claim_and_sleep, args=(tmp_path, out))
    proc.start()
    assert out.get(timeout=10) == 0
    busy = claim_device(tmp_path, n_gpus=1, environ=NO_SCHEDULER, timeout=0.3, poll=0.05)
    with pytest.raises(GpuClaimTimeout, match=f"pid {proc.pid} "), busy:  # held: not ours
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    t0 = time.monotonic()
    with claim_device(tmp_path, n_gpus=1, environ=NO_SCHEDULER, timeout=2, poll=0.05) as c:
        assert c == DeviceClaim("cuda:0", 0, "lock", str(tmp_path / "gpu0.lock"))
    assert time.monotonic() - t0 < 1.0


def test_in_process_claims_and_release(tmp_path):
    kw = dict(n_gpus=2, environ=NO_SCHEDULER, timeout=0.2, poll=0.05)
    with claim_device(tmp_path, **kw) as c0, claim_device(tmp_path, **kw) as c1:
        assert (c0.index, c1.index) == (0, 1)
        assert str(c1) == "cuda:1"
        with pytest.raises(GpuClaimTimeout, match="all 2 GPU slots"), claim_device(tmp_path, **kw):
            pass
    with claim_device(tmp_path, **kw) as again:
        assert again.index == 0
    assert (tmp_path / "gpu0.lock").read_text() == ""  # cleared on release


def test_shared_claims_run_beside_the_slot_holders_and_spread_over_the_gpus(tmp_path):
    kw = dict(n_gpus=2, environ=NO_SCHEDULER, timeout=0.2, poll=0.05)
    with claim_device(tmp_path, **kw) as own0, claim_device(tmp_path, **kw) as own1:
        assert (own0.index, own1.index) == (0, 1)  # both GPUs' own slots are taken
        with (
            claim_device(tmp_path, shared=True, **kw) as a,
            claim_device(tmp_path, shared=True, **kw) as b,
            claim_device(tmp_path, shared=True, **kw) as c,
        ):
            # none waited; they spread over the GPUs before any GPU gets a second one
            assert [x.index for x in (a, b, c)] == [0, 1, 0]
            assert [x.device for x in (a, b, c)] == ["cuda:0", "cuda:1", "cuda:0"]
            assert a == DeviceClaim("cuda:0", 0, "shared lock", str(tmp_path / "gpu0.shared0.lock"))
            assert c.lock_path == str(tmp_path / "gpu0.shared1.lock")
            # a GPU's own slot is still one job's: a third exclusive claim waits and times out
            with pytest.raises(GpuClaimTimeout), claim_device(tmp_path, **kw):
                pass
        with claim_device(tmp_path, shared=True, **kw) as again:  # released: back to GPU 0
            assert again.lock_path == str(tmp_path / "gpu0.shared0.lock")
    # a run given one GPU (--resources gpu=1) keeps its shared jobs on GPU 0
    one = dict(shared=True, limit=1, **kw)
    with claim_device(tmp_path, **one) as a, claim_device(tmp_path, **one) as b:
        assert (a.index, b.index) == (0, 0) and b.lock_path.endswith("gpu0.shared1.lock")
    four = dict(shared=True, limit=4, **kw)  # more than are visible: the 2 there are
    with claim_device(tmp_path, **four) as a, claim_device(tmp_path, **four) as b:
        assert (a.index, b.index) == (0, 1)


def test_shared_claims_also_follow_the_scheduler_and_the_cpu(tmp_path):
    with claim_device(tmp_path / "s", n_gpus=1, environ={"SLURM_JOB_ID": "1"}, shared=True) as c:
        assert c == DeviceClaim("cuda:0", 0, "scheduler")
    with claim_device(tmp_path / "c", n_gpus=0, environ=NO_SCHEDULER, shared=True) as c:
        assert c.device == "cpu"
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()


def _shared_holder(lock_dir, out, release):
    with claim_device(lock_dir, n_gpus=1, environ=NO_SCHEDULER, shared=True, timeout=5) as c:
        out.put(c.lock_path)
        release.wait(30)


def test_a_killed_shared_job_frees_its_shared_slot(tmp_path):
    out, release = CTX.Queue(), CTX.Event()
    proc = CTX.Process(target=_shared_holder, args=(tmp_path, out, release))
    proc.start()
    assert out.get(timeout=10) == str(tmp_path / "gpu0.shared0.lock")
    kw = dict(n_gpus=1, environ=NO_SCHEDULER, shared=True, timeout=1)
    with claim_device(tmp_path, **kw) as beside:  # the other process holds shared0
        assert beside.lock_path == str(tmp_path / "gpu0.shared1.lock")
    os.kill(proc.pid, signal.SIGKILL)
    _stop(proc)
    with claim_device(tmp_path, **kw) as after:
        assert after.lock_path == str(tmp_path / "gpu0.shared0.lock")


@pytest.mark.parametrize("var", ["SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES"])
def test_scheduler_choice_takes_no_lock(tmp_path, monkeypatch, caplog, var):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv(var, "3")
    lock_dir = tmp_path / "locks"
    with (
        caplog.at_level(logging.INFO, logger="virnuc.gpu"),
        claim_device(lock_dir, n_gpus=1) as c,
        claim_device(lock_dir, n_gpus=1) as c2,  # a scheduled job never waits for a slot
    ):
        assert c == DeviceClaim("cuda:0", 0, "scheduler")
        assert c2.device == "cuda:0"
    assert not lock_dir.exists()
    assert var in caplog.text


def test_cpu_cases(tmp_path):
    with claim_device(tmp_path / "a", n_gpus=0, environ=NO_SCHEDULER) as c:
        assert c == DeviceClaim("cpu", None, "cpu")
    with claim_device(tmp_path / "b", prefer_cuda=False, n_gpus=4, environ=NO_SCHEDULER) as c:
        assert c.device == "cpu"
    with claim_device(tmp_path / "c", environ={"SLURM_JOB_ID": "1"}, n_gpus=0) as c:
        assert c.device == "cpu"  # a SLURM job without a GPU runs on the CPU
    assert not any((tmp_path / d).exists() for d in "abc")


def test_default_count_uses_torch(tmp_path):
    torch = pytest.importorskip("torch")
    with claim_device(tmp_path, environ=NO_SCHEDULER, timeout=1) as c:
        if not torch.cuda.is_available():
            assert c.device == "cpu"
        else:
            assert c.device.startswith("cuda:")


HOLDER_WITH_READERS = """
import sys, time, numpy as np
from torch.utils.data import IterableDataset
from virnuc_core.jobs.gpu import claim_device
from virnuc_core.engine.runner import read_tokens
from virnuc_core.jobs.store import ShardCheckpoint

class Slow(IterableDataset):  # a reader that outlives its job by far
    def __iter__(self):
        time.sleep(60)
        yield [(0, np.zeros(1, np.int64))]

lock_dir, work = sys.argv[1], sys.argv[2]
with claim_device(lock_dir, n_gpus=1, environ={}) as claim:
    ckpt = ShardCheckpoint.open(work, "fp", 4, 0, 4)
    tokens = read_tokens(Slow(), workers=1)
    print("holding", flush=True)
    next(tokens)
"""


def test_a_killed_job_frees_its_slot_and_work_although_its_readers_live_on(tmp_path):
    """The DataLoader's reader processes inherit the job's lock descriptors when they fork; they
    close them at start, so SIGKILL of the job frees the GPU slot and its work directory even
    while a reader still runs."""
    import subprocess
    import sys
    from pathlib import Path

    import psutil

    from virnuc_core.jobs.store import ShardCheckpoint

    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    job = subprocess.Popen(
        [sys.executable, "-c", HOLDER_WITH_READERS, str(tmp_path / "locks"), str(work)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert job.stdout.readline().strip() == "holding"
    readers = psutil.Process(job.pid).children()
    deadline = time.time() + 30
    while not readers and time.time() < deadline:  # the reader process has started
        time.sleep(0.1)
        readers = psutil.Process(job.pid).children()
    time.sleep(1.0)
    job.send_signal(signal.SIGKILL)
    job.wait(10)
    assert any(r.is_running() for r in readers)  # a reader outlives the job...
    kw = dict(n_gpus=1, environ=NO_SCHEDULER, poll=0.05, timeout=5)
    with claim_device(tmp_path / "locks", **kw) as c:  # ...but holds neither lock
        assert c.index == 0
        ShardCheckpoint.open(work, "fp", 4, 0, 4).close()
    for r in readers:
        with contextlib.suppress(psutil.Error):
            r.kill()


def _nvidia_smi(folder, listing: str) -> None:
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    smi.chmod(0o755)


def test_no_gpu_reason_without_torch(tmp_path, monkeypatch):
    if os.path.exists("/dev/kfd"):
        pytest.skip("an AMD GPU device here")
    driver = tmp_path / "gpus"
    driver.mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no nvidia-smi
    assert no_gpu_reason({}, driver) == (
        "no NVIDIA driver: no nvidia-smi, nothing in /proc/driver/nvidia/gpus"
    )
    for hidden in ("", "-1"):
        assert no_gpu_reason({"CUDA_VISIBLE_DEVICES": hidden}, driver) == (
            f"CUDA_VISIBLE_DEVICES is {hidden!r}"
        )
    (driver / "0000:17:00.0").mkdir()  # the driver lists a GPU
    assert no_gpu_reason({}, driver) is None
    assert no_gpu_reason({"CUDA_VISIBLE_DEVICES": "1"}, driver) is None
    (driver / "0000:17:00.0").rmdir()
    (tmp_path / "bin").mkdir()
    _nvidia_smi(tmp_path / "bin", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\\n")
    assert no_gpu_reason({}, driver) is None
    _nvidia_smi(tmp_path / "bin", "No devices found.\\n")
    assert no_gpu_reason({}, driver) == "nvidia-smi -L lists no GPU"
