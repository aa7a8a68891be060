"""Progress lines for long jobs: records done of total, throughput and ETA, at a steady interval."""

from __future__ import annotations

import logging
import time


class Progress:
    """Counts records and tokens; logs a line at most every ``every_seconds`` (and at the end)."""

    def __init__(
        self, total: int, every_seconds: float, log: logging.Logger, done: int = 0
    ) -> None:
        self.total, self.every, self.log = total, every_seconds, log
        self.done, self.tokens = done, 0
        self.start_done = done
        self.start = self.last = time.monotonic()

    def update(self, records: int, tokens: int) -> None:
        """Add a finished batch; log when the interval has passed."""
        self.done += records
        self.tokens += tokens
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log.info(self.line(now))

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the start."""
        return max(1e-9, (now or time.monotonic()) - self.start)

    def tokens_per_s(self, now: float | None = None) -> float:
        """Tokens per second since the start."""
        return self.tokens / self.elapsed(now)

    def records_per_s(self, now: float | None = None) -> float:
        """Records per second since the start (records done before it not counted)."""
        return (self.done - self.start_done) / self.elapsed(now)

    def line(self, now: float | None = None) -> str:
        """The current progress line."""
        now = now or time.monotonic()
        rate = self.records_per_s(now)
        left = self.total - self.done
        eta = f"{left / rate:.0f} s" if rate > 0 else "unknown"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"progress: {self.done}/{self.total} records ({pct:.1f}%), "
            f"{self.tokens_per_s(now):,.0f} tokens/s, {rate:,.1f} records/s, ETA {eta}"
        )
