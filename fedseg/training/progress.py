"""Progress of a training run in the log: steps per second and the time left, every few seconds.

A site's round can take minutes on a CPU; a silent round looks like a hang. ``StepProgress`` is
an ``on_step`` callback for ``LocalTrainer.run`` that logs at most every ``interval`` seconds
and once at the end.
"""

from __future__ import annotations

import logging
import time
from typing import Any

logger = logging.getLogger("fedseg.progress")


class StepProgress:
    def __init__(self, label: str, total: int, *, interval: float = 15.0) -> None:
        self.label, self.total, self.interval = label, total, interval
        self.done = 0
        self.started = self.last = time.monotonic()

    def __call__(self, *_: Any) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= self.interval or self.done == self.total:
            self.last = now
            logger.info("%s", self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (
            f"{self.label}: step {self.done}/{self.total}, {rate:.2f} steps/s, "
            f"{elapsed:.0f} s elapsed, about {left:.0f} s left"
        )
