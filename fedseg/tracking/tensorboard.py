"""TensorBoard event files in the run folder (``tensorboard --logdir RUN/tensorboard``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedseg.tracking.base import Tracker, finite


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when tracking

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_params(self, params: Mapping[str, Any]) -> None:
        rows = "\n".join(f"| {key} | `{value}` |" for key, value in sorted(params.items()))
        self.writer.add_text("config", "| setting | value |\n|---|---|\n" + rows)
        self.writer.flush()

    def log_metrics(self, metrics: Mapping[str, float | None], *, step: int) -> None:
        for name, value in finite(metrics).items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()  # a crashed run keeps every round it logged

    def close(self) -> None:
        self.writer.close()
