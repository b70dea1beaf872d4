"""A federated run's folder: what the server writes after every round, and how it resumes.

::

    config.json           the run config (a resumed run must match it)
    rounds.jsonl          one line per round: per-site training metrics, held-out and validation scores
    privacy.jsonl         the privacy ledger: per site and round, sampling rate, noise, steps, epsilon
    checkpoints/last.pt   the global model after the last round (self-describing, atomic)
    checkpoints/best.pt   the global model with the best validation Dice of the *training* sites
    checkpoints/server.pt the server's resume point: round, global weights, best score
    summary.md, learning_curve.png

Order of writes per round: the round's log lines, then the checkpoints, then the resume point.
A crash between them leaves log lines for a round that has no resume point; resuming drops them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedseg.configuration import ConfigError
from fedseg.federation.config import FederationConfig
from fedseg.files import append_jsonl, atomic_torch_save, atomic_write_json, atomic_write_text, read_jsonl
from fedseg.models import build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint
from fedseg.models.state import load_model_state

logger = logging.getLogger(__name__)

# Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = {"num-server-rounds", "resume", "round-timeout", "min-train-sites", "device"}


@dataclass(frozen=True)
class ResumePoint:
    round: int
    weights: Mapping[str, torch.Tensor]
    best_validation_dice: float | None


class RunFolder:
    def __init__(self, out: Path, config: FederationConfig) -> None:
        self.root, self.config = Path(out), config
        self.config_file = self.root / "config.json"
        self.rounds = self.root / "rounds.jsonl"
        self.privacy = self.root / "privacy.jsonl"
        self.last = self.root / "checkpoints" / "last.pt"
        self.best = self.root / "checkpoints" / "best.pt"
        self.server_state = self.root / "checkpoints" / "server.pt"
        self.summary = self.root / "summary.md"
        self.curve = self.root / "learning_curve.png"

    def site_state_dir(self, site: str) -> Path:
        """Where a simulated site keeps its private state (a hospital's own disk in deployment)."""
        return self.root / "sites" / site

    # -- starting and resuming ------------------------------------------------------------------
    def start(self) -> ResumePoint | None:
        """Create the folder, or find where a previous run with the same settings stopped."""
        self.root.mkdir(parents=True, exist_ok=True)
        current = self.config.to_run_config()
        if self.server_state.exists():
            saved = json.loads(self.config_file.read_text())
            changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
            if not self.config.resume:
                raise ConfigError(
                    f"{self.root}: holds a federated run already; set run config 'resume = true' to "
                    "continue it, or choose another 'out'"
                )
            if changed:
                raise ConfigError(f"{self.root}: cannot resume, run config changed: {changed}")
            point = self._resume_point()
            self._drop_lines_after(point.round)
            logger.info("resuming %s after round %d", self.root, point.round)
            return point
        if self.rounds.exists() and read_jsonl(self.rounds):
            raise ConfigError(f"{self.root}: has rounds.jsonl but no resume point; choose another 'out'")
        atomic_write_json(self.config_file, current)
        return None

    def _resume_point(self) -> ResumePoint:
        state = torch.load(self.server_state, map_location="cpu", weights_only=True)
        return ResumePoint(int(state["round"]), state["weights"], state["best_validation_dice"])

    def _drop_lines_after(self, last_round: int) -> None:
        for path in (self.rounds, self.privacy):
            if path.exists():
                kept = [line for line in read_jsonl(path) if int(line["round"]) <= last_round]
                atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in kept))

    # -- after every round ----------------------------------------------------------------------
    def record_round(self, record: Mapping[str, Any], ledger: list[Mapping[str, Any]]) -> None:
        append_jsonl(self.rounds, dict(record))
        for entry in ledger:
            append_jsonl(self.privacy, dict(entry))

    def save_models(
        self,
        server_round: int,
        weights: Mapping[str, torch.Tensor],
        *,
        validation_dice: float | None,
        best_validation_dice: float | None,
    ) -> float | None:
        """Write last.pt (and best.pt when validation improved), then the resume point. Returns the best score."""
        model = build_model(self.config.model_config)
        load_model_state(model, weights)
        preprocessing = Preprocessing(channels=self.config.channels, resize=self.config.resize or None)
        meta = {
            "round": server_round,
            "experiment": self.config.experiment,
            "crop_size": self.config.crop_size,
            "validation_dice": validation_dice,
            "federated": True,
        }
        save_checkpoint(
            self.last, model=model, model_config=self.config.model_config, preprocessing=preprocessing, meta=meta
        )
        if validation_dice is not None and (best_validation_dice is None or validation_dice > best_validation_dice):
            best_validation_dice = validation_dice
            save_checkpoint(
                self.best, model=model, model_config=self.config.model_config, preprocessing=preprocessing, meta=meta
            )
        atomic_torch_save(
            {"round": server_round, "weights": dict(weights), "best_validation_dice": best_validation_dice},
            self.server_state,
        )
        return best_validation_dice

    def rounds_done(self) -> list[dict[str, Any]]:
        return read_jsonl(self.rounds) if self.rounds.exists() else []
