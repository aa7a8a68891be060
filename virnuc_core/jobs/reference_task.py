"""An embed job's reference rows, made before its loop or beside it.

The reference rows of a shard (:func:`virnuc_core.jobs.references.shard_reference`: fp32, the plain
v1 path) cost ESM-2 3B's job 14 s on an H200 before its loop could start, on the run's critical
path. Where the device has room for the fp32 copy beside the fast model and the loop
(:func:`fits_beside`), they are made in a thread on a CUDA stream of their own while the loop
runs: the GPU then does their work between the loop's, and nothing waits for them until the
job completes. Elsewhere (the CPU, a GPU too small) they are made first, as before.

The rows are the same either way (the same fp32 forward of the same weights); a reference thread
that runs out of GPU memory makes its rows again after the loop, and any other error fails the
job when it completes, as it would have before the loop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import numpy as np
import torch

from virnuc_core.jobs.references import kept, shard_reference

log = logging.getLogger("virnuc.references")

# Free device memory needed for the rows beside the loop, in reference copies: the fp32 copy,
# the packed model (bf16: half a copy) and a copy's worth for the loop's activations beside it.
BESIDE_ROOM = 2.5


def fits_beside(encoder, device: torch.device) -> bool:
    """Whether ``device`` has room to make the reference rows beside the loop (CUDA only: on
    the CPU the two would share the same cores)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return free >= BESIDE_ROOM * encoder.reference_bytes()


class ReferenceTask:
    """The shard's reference rows for one embed job: :meth:`prepare` and :meth:`begin`
    (before the loop), :meth:`finish` (after it: waits, raises what failed)."""

    def __init__(self, encoder, shard, sample: np.ndarray, made_with: str, path: str,
                 attrs: dict) -> None:  # fmt: skip
        self.encoder, self.device = encoder, torch.device(encoder.device)
        self._make = lambda: shard_reference(encoder, shard, sample, made_with, path, attrs)
        self._kept = lambda: kept(shard, sample, made_with, path)
        self._thread: threading.Thread | None = None
        self._beside_loop = False
        self._error: BaseException | None = None
        self.seconds = 0.0  # making the rows (in the thread, when beside)

    @property
    def beside(self) -> bool:
        """Whether the rows are made beside the loop."""
        return self._beside_loop

    def prepare(self, beside: bool | None = None) -> None:
        """Before the job's readers start (they are forked: they would keep the host's fp32
        copy of the weights): make the rows now, or ready both paths on the device to make
        them beside the loop (``beside``; None: when :func:`fits_beside`, and not when a
        resumed job's rows are kept: nothing to make)."""
        if beside is None:
            beside = not self._kept() and fits_beside(self.encoder, self.device)
        self._beside_loop = bool(beside)
        if beside:
            self.encoder.ready_fast_path()  # the fp32 copy moves to the device, off the host
        else:
            self._run()

    def begin(self) -> None:
        """Start the rows' thread, if they are made beside the loop (after the readers' fork:
        a forked process holds none of this thread's locks)."""
        if not self._beside_loop:
            return
        self._thread = threading.Thread(target=self._beside, name="reference-rows", daemon=True)
        self._thread.start()
        log.info("reference rows beside the embed loop")

    def _run(self) -> None:
        started = time.time()
        self._make()
        if self.device.type == "cuda":  # this stream done with the weights before they are freed
            torch.cuda.current_stream(self.device).synchronize()
        self.encoder.release_reference()
        self.seconds = round(time.time() - started, 3)

    def _beside(self) -> None:
        try:
            with _own_stream(self.device):
                self._run()
        except BaseException as exc:  # noqa: BLE001 - handed to the job's thread in finish()
            self._error = exc

    def wait(self) -> None:
        """Wait for the rows beside the loop (a stopped or failed job too), raising nothing."""
        if self._thread is not None:
            self._thread.join()

    def finish(self) -> None:
        """Wait for the rows; make them now if they ran out of GPU memory beside the loop;
        raise any other error they met."""
        self.wait()
        error, self._error = self._error, None
        if isinstance(error, torch.OutOfMemoryError):
            log.warning("reference rows ran out of GPU memory beside the loop (%s); making "
                        "them now", error)  # fmt: skip
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._run()
        elif error is not None:
            raise error


def _own_stream(device: torch.device):
    """A CUDA stream for this thread's work (the loop keeps the default one)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.Stream(device))
