"""What the benches share: the job's settings, packing and device loop; timing; result files.

Benches measure what an embed job runs, through the functions the job calls:

- settings: the config schema's defaults with the bench's changes (:func:`job_settings`, the
  same path as a workflow config: :meth:`WorkflowSettings.embed`);
- the encoder: :func:`virnuc_core.registry.load_encoder`, or for an ESM-2 model built in
  memory (no checkpoint file to load) the constructor the loader calls, with the same resolved
  values (:func:`esm_encoder`);
- batches: the job's packer (:func:`job_batches`, :func:`virnuc_core.engine.runner.packed_batches`)
  and its device loop (:func:`run_batches`, :func:`virnuc_core.engine.runner.embed_batches`: copies
  on a side stream, pooled rows copied back one batch late);
- cosines: :func:`virnuc_core.jobs.validate.cosine_rows`.

Also the matmul rate MFU figures divide by, timing, machine facts and the result JSON. Run the
benches from the repository root as ``python -m bench.NAME``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from virnuc_core.engine import attention
from virnuc_core.engine.packing import PackedBatch
from virnuc_core.engine.runner import embed_batches, packed_batches
from virnuc_core.settings import MODELS, EmbedSettings, WorkflowSettings

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
AMINO = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


# -- the job's settings, encoder, packing and device loop ---------------------------------------


def setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` (a config key, dotted for nested ones; the value in YAML) as a pair."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def add_settings_arg(parser) -> None:
    """``--set KEY=VALUE ...``: config keys for the jobs measured, as in config.yaml."""
    parser.add_argument("--set", nargs="*", type=setting, default=[], metavar="KEY=VALUE",
                        help="config keys of the job, e.g. attention_backend=padded "
                        "compile=false (default: the schema's defaults)")  # fmt: skip


def job_settings(
    model: str, spec: str, changes: Iterable[tuple[str, object]] = ()
) -> EmbedSettings:
    """The settings of an embed job of ``model`` (``model_spec`` = ``spec``): the schema's
    defaults with ``changes`` (config keys, dotted for nested ones: ``token_budget.esm``)."""
    config: dict = {"chunk_length": 500, "shards": 1, "models": {m: spec for m in MODELS}}
    for key, value in dict(changes).items():
        *parents, last = key.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return WorkflowSettings.from_config(config).embed(model)


def random_esm(size: str, seed: int = 0, device: torch.device = DEVICE):
    """A random ESM-2 of a published size (fair-esm's model and init): (model, alphabet)."""
    from virnuc_core.engine.models.esm2_load import ESM2_ARCH, random_model

    fair, alphabet = random_model(seed, device, **ESM2_ARCH[size][1])
    # what esm2_load records for a file and ESMEncoder.describe() reports (no hash of 3B here)
    fair.virnuc_weights_sha256, fair.virnuc_weights_of = f"random (seed {seed})", "none"
    return fair, alphabet


def _no_reference():
    raise RuntimeError("this bench does not use the encoder's fp32 reference path")


def esm_encoder(fair, settings: EmbedSettings, device=DEVICE, reference=None, **ops):
    """The encoder an ESM-2 job with ``settings`` runs, on a model built in memory: the values
    :func:`virnuc_core.registry.load_encoder` resolves (precision, attention backend), the
    constructor its loader calls. ``ops``: :class:`LinearOps` options (not settings:
    ``residual_in_matmul``). ``reference``: builds the fp32 reference model (default: none)."""
    from virnuc_core.engine.attention import choose_backend
    from virnuc_core.engine.models.esm2 import ESMEncoder
    from virnuc_core.engine.models.esm2_matmuls import LinearOps

    device = torch.device(device)
    precision = settings.precision if device.type == "cuda" else "fp32"
    backend = choose_backend(settings.attention_backend, device.type, False)
    enc = ESMEncoder(fair, settings.model_spec, device, precision, backend, settings.repr_layer,
                     reference_factory=reference or _no_reference)  # fmt: skip
    if ops:
        enc.ops = LinearOps(**ops)
    return enc


def job_batches(tokens: Sequence[np.ndarray], budget: int, device=DEVICE) -> list:
    """``tokens`` packed as a job packs them (pinned on CUDA): (records, batch) pairs, records
    being positions in ``tokens``."""
    return list(packed_batches(enumerate(tokens), budget, pin=torch.device(device).type == "cuda"))


@dataclass
class Timed:
    """One run of the device loop: seconds, what it embedded, and (``keep``) the rows."""

    seconds: float
    records: np.ndarray  # positions in the tokens, in the order they were embedded
    tokens: int
    batches: int
    embeddings: np.ndarray | None  # rows by record (kept ones only)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def run_batches(
    embed: Callable[[PackedBatch], torch.Tensor], batches: list, device=DEVICE,
    seconds: float | None = None, keep: bool = False,
) -> Timed:  # fmt: skip
    """The job's device loop over ``batches``: once, or cycled until ``seconds`` have passed.
    Timed from the first copy to the last batch's rows on the host."""
    device = torch.device(device)

    def feed():
        i = 0
        while i < len(batches) if seconds is None else (i == 0 or clock() - start < seconds):
            yield batches[i % len(batches)]
            i += 1

    clock, recs, rows, tokens = time.perf_counter, [], [], 0
    sync()
    start = clock()
    for r, emb, t in embed_batches(embed, feed(), device):
        recs.append(r)
        rows.append(emb if keep else None)
        tokens += t
    took = clock() - start
    records = np.concatenate(recs) if recs else np.zeros(0, np.int64)
    kept = None
    if keep and recs:
        kept = np.zeros((int(records.max()) + 1, rows[0].shape[1]), np.float32)
        kept[records] = np.concatenate(rows)
    return Timed(took, records, tokens, len(recs), kept)


@contextlib.contextmanager
def backend_label(label: str | None):
    """Yields the attention backend of a bench label (None: None): ``padded-auto`` is the
    padded backend with SDPA choosing its kernel (as before round 2), while the block runs."""
    attention.PADDED_SDPA = None if label == "padded-auto" else attention.PADDED_SDPA_DEFAULT
    try:
        yield "padded" if label == "padded-auto" else label
    finally:
        attention.PADDED_SDPA = attention.PADDED_SDPA_DEFAULT


def model_flops(lengths, params: int, layers: int, dim: int) -> float:
    """Model FLOPs of sequences of ``lengths`` tokens: 2 x non-embedding parameters a token, and
    4 x L^2 x dim a sequence and layer (QK^T and AV); padding never counts."""
    n = np.asarray(lengths, dtype=np.float64)
    return float(2.0 * params * n.sum() + 4.0 * layers * dim * (n * n).sum())


def frames_compiled() -> int:
    """Frames torch.compile has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return counters["frames"]["ok"]


def chunk_proteins(n: int, seed: int = 0) -> list[str]:
    """Proteins shaped like translated 500-base chunks: 2/3 of 165-166 aa, 1/3 of 40-166 aa."""
    rng = np.random.default_rng(seed)
    full = rng.random(n) < 2 / 3
    lengths = np.where(full, rng.integers(165, 167, n), rng.integers(40, 167, n))
    return ["".join(rng.choice(AMINO, size=int(k))) for k in lengths]


# -- timing, machine, results -------------------------------------------------------------------


def sync() -> None:
    """Wait for the GPU (no-op without one), so that wall-clock times cover its work."""
    if CUDA:
        torch.cuda.synchronize()


def time_cuda(fn: Callable[[], object], warmup: int = 3, iters: int = 10) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls: CUDA events on a GPU,
    ``perf_counter`` on the CPU; each timed call is measured on its own."""
    for _ in range(warmup):
        fn()
    times = []
    sync()
    for _ in range(iters):
        if CUDA:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_matmul_tflops(dtype=torch.bfloat16, n: int = 8192, iters: int = 20) -> float:
    """Achieved dense n^3 matmul rate (TFLOP/s) in ``dtype``: what MFU figures divide by. On the
    CPU a small fp32 product (n <= 1024) is timed instead, a sanity value only."""
    if not CUDA:
        dtype, n, iters = torch.float32, min(n, 1024), min(iters, 3)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    a = torch.randn(n, n, device=DEVICE, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=DEVICE, dtype=dtype, generator=g)
    out = torch.empty(n, n, device=DEVICE, dtype=dtype)
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
    if CUDA:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(),
                    driver_capability=f"{p.major}.{p.minor}")  # fmt: skip
    for mod in ("esm", "transformers", "flash_attn"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages
            info[mod] = None
    return info


def cpu_info() -> dict:
    """The CPU benches' machine facts: platform, CPU model, visible CPUs, Python, numpy."""
    model = "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as handle:
        model = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    return {"platform": platform.platform(), "cpu_model": model, "cpus_visible": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__}  # fmt: skip


def write_json(path: str | os.PathLike | None, payload: Mapping) -> None:
    """``payload`` as indented JSON at ``path`` (parents created); nothing for None."""
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
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """``rows`` (dicts) as a plain aligned text table."""
    if not rows:
        return
    columns = columns or list(rows[0])
    fmt = lambda v: f"{v:.6g}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    for row in [columns, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
