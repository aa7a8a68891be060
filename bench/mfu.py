"""Shared helpers for the bench scripts: matmul rate, timing, machine info, result JSON.

Generic on purpose (no model knowledge): imported by bench/esm2_*.py and bench/dnabert_*.py.
Run the scripts from the repository root (``python bench/<script>.py``), or import this module
as ``bench.mfu`` / ``mfu``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _sync(device: torch.device | None = None) -> None:
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.synchronize(device)


def time_cuda(fn: Callable[[], object], warmup: int = 3, iters: int = 10) -> float:
    """Median seconds per call of ``fn``: CUDA events on a GPU, ``perf_counter`` on the CPU.

    ``warmup`` calls are run first and not timed; each timed call is measured on its own.
    """
    for _ in range(warmup):
        fn()
    times = []
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_matmul_tflops(
    dtype: torch.dtype = torch.bfloat16, n: int = 8192, iters: int = 20
) -> float:
    """Achieved dense matmul rate (TFLOP/s) for an n x n x n product in ``dtype``.

    On a GPU this is the practical peak that MFU figures are divided by. On the CPU (no GPU) a
    small fp32 product is timed instead (n capped at 1024) so that scripts still run; the number
    is only a sanity value there.
    """
    if torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device, dtype, n, iters = torch.device("cpu"), torch.float32, min(n, 1024), min(iters, 3)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    out = torch.empty(n, n, device=device, dtype=dtype)
    seconds = time_cuda(lambda: torch.matmul(a, b, out=out), warmup=3, iters=iters)
    return 2.0 * n**3 / seconds / 1e12


def machine_info() -> dict:
    """GPU name, torch/CUDA versions, date, hostname and command line of this run."""
    info = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=p.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
            driver_capability=f"{p.major}.{p.minor}",
        )
    for mod in ("esm", "transformers", "flash_attn"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages
            info[mod] = None
    return info


def write_json(path: str | os.PathLike | None, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` (parents created); no-op for None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if isinstance(obj, torch.device | Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Print ``rows`` (dicts) as a plain aligned text table."""
    if not rows:
        return
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
