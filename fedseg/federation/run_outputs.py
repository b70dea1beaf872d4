"""A federated run's folder: what the server writes after every round, and how it resumes.

::

    config.json           the run config (a resumed run must match it)
    rounds.jsonl          one line per round: per-site training metrics, held-out and validation scores
    privacy.jsonl         the privacy ledger: one row per site and release (update, validation score,
                          refusal): sampling rate, noise, steps, cumulative epsilon
    messages.jsonl        every reply the server received: type, round, site, record names and keys
    checkpoints/last.pt   the global model after the last round (self-describing, atomic)
    checkpoints/best.pt   the global model with the best validation Dice of the *training* sites
    checkpoints/last.he, best.he   instead of the two above with encrypted aggregation: the server never
                          holds the plaintext model; a site turns them into .pt with `fedseg decrypt`
    checkpoints/server.pt the server's resume point: round, global model (or its ciphertext), best score
    summary.md, learning_curve.png
    STOP                  written by whoever stops the run from outside before stopping it (the results
                          suite's parts do): the round in progress is not recorded, and runs again when
                          the run resumes (its sites answer it again from their saved replies); a run
                          that starts removes it

Order of writes per round: the round's log lines, then the checkpoints, then the resume point.
A crash between them leaves log lines for a round that has no resume point; resuming drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch

from fedseg.configuration import ConfigError
from fedseg.crypto import transport
from fedseg.crypto.packing import EncryptedVector
from fedseg.federation.config import FederationConfig
from fedseg.files import (
    append_jsonl,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    read_json_table,
    read_jsonl,
    write_jsonl,
)
from fedseg.integrity import DamagedFileError, sealed, unsealed
from fedseg.models import build_model
from fedseg.models.checkpoint import save_checkpoint
from fedseg.models.state import load_model_state
from fedseg.tracking import Tracker, open_tracker
from fedseg.tracking.metrics import round_metrics

logger = logging.getLogger(__name__)

STOP_FILE = "STOP"
SERVER_STATE_KEYS = {"round", "weights", "encrypted", "best_validation_dice"}
# Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = {"num-server-rounds", "resume", "round-timeout", "min-train-sites", "device", "tracking"}


Model = Union[Mapping[str, torch.Tensor], EncryptedVector]


@dataclass(frozen=True)
class ResumePoint:
    round: int
    model: Model
    best_validation_dice: float | None


class RunFolder:
    def __init__(self, out: Path, config: FederationConfig) -> None:
        self.root, self.config = Path(out), config
        self.config_file = self.root / "config.json"
        self.rounds = self.root / "rounds.jsonl"
        self.privacy = self.root / "privacy.jsonl"
        self.last = self.root / "checkpoints" / "last.pt"
        self.best = self.root / "checkpoints" / "best.pt"
        self.last_encrypted = self.root / "checkpoints" / "last.he"
        self.best_encrypted = self.root / "checkpoints" / "best.he"
        self.server_state = self.root / "checkpoints" / "server.pt"
        self.summary = self.root / "summary.md"
        self.stop_request = self.root / STOP_FILE
        self.curve = self.root / "learning_curve.png"
        self.tracker = Tracker()  # opened by start(): only the server tracks, never a site

    def site_state_dir(self, site: str) -> Path:
        """Where a simulated site keeps its private state (a hospital's own disk in deployment)."""
        return self.root / "sites" / site

    # -- starting and resuming ------------------------------------------------------------------
    def start(self) -> ResumePoint | None:
        """Create the folder, or find where a previous run with the same settings stopped."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.stop_requested():
            logger.info("%s: removed the stop request of an earlier run", self.stop_request)
            self.stop_request.unlink()
        current = self.config.to_run_config()
        point = self._start_or_resume(current)
        self.tracker = open_tracker(self.config.tracking, run_folder=self.root, experiment=self.config.experiment)
        self.tracker.log_params(current)
        return point

    def _start_or_resume(self, current: dict[str, Any]) -> ResumePoint | None:
        if self.server_state.exists():
            saved = read_json_table(self.config_file)
            defaults = type(self.config)().to_run_config()  # a key added since the run started had its default
            changed = sorted(
                k for k in current if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current.get(k)
            )
            if not self.config.resume:
                raise ConfigError(
                    f"{self.root}: holds a federated run already; set run config 'resume = true' to "
                    "continue it, or choose another 'out'"
                )
            if changed:
                was = "; ".join(f"{k}: {saved.get(k, defaults[k])!r} -> {current.get(k)!r}" for k in changed)
                raise ConfigError(
                    f"{self.root}: cannot resume, run config changed ({was}); run it with the settings of its "
                    f"{self.config_file.name}, or choose another 'out'"
                )
            point = self._resume_point()
            self._drop_lines_after(point.round)
            logger.info("resuming %s after round %d", self.root, point.round)
            return point
        if self.rounds.exists() and read_jsonl(self.rounds):
            raise ConfigError(f"{self.root}: has rounds.jsonl but no resume point; choose another 'out'")
        atomic_write_json(self.config_file, current)
        return None

    def _resume_point(self) -> ResumePoint:
        path, fix = self.server_state, "Restore it from a backup, or start the run in a new 'out' folder."
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            state = unsealed(payload, path, what="server resume point", keys=SERVER_STATE_KEYS, fix=fix)
            model = transport.from_bytes(state["encrypted"])[0] if state["encrypted"] is not None else state["weights"]
            return ResumePoint(int(state["round"]), model, state["best_validation_dice"])
        except DamagedFileError:
            raise
        except Exception as error:  # torch and the ciphertext reader raise many types for damaged files
            raise DamagedFileError(
                f"{path}: damaged or not a fedseg server resume point ({type(error).__name__}: {str(error)[:200]}). "
                f"{fix}"
            ) from None

    def _drop_lines_after(self, last_round: int) -> None:
        for path in (self.rounds, self.privacy):
            if path.exists():
                write_jsonl(path, [line for line in read_jsonl(path) if int(line["round"]) <= last_round])

    # -- after every round ----------------------------------------------------------------------
    def stop_requested(self) -> bool:
        """Whether the run is being stopped from outside: the round in progress must not be recorded (its
        sites may have failed only because they were being stopped)."""
        return self.stop_request.exists()

    def record_round(self, record: Mapping[str, Any], ledger: list[Mapping[str, Any]]) -> None:
        append_jsonl(self.rounds, dict(record))
        for entry in ledger:
            append_jsonl(self.privacy, dict(entry))
        self.tracker.log_metrics(round_metrics(record, ledger), step=int(record["round"]))

    def finish(self) -> None:
        """After the summary is written: the final model and the report go to the tracker, which closes."""
        files = (self.last, self.last_encrypted, self.best, self.best_encrypted, self.summary, self.curve)
        self.tracker.log_artifacts([*files, self.rounds, self.privacy])
        self.tracker.close()

    def _meta(self, server_round: int, validation_dice: float | None) -> dict[str, Any]:
        return {
            "round": server_round,
            "experiment": self.config.experiment,
            "crop_size": self.config.crop_size,
            "patch_slices": self.config.patch_slices,
            "validation_dice": validation_dice,
            "federated": True,
        }

    def _save_plain(self, path: Path, weights: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> None:
        model = build_model(self.config.model_config)
        load_model_state(model, weights)
        save_checkpoint(
            path, model=model, model_config=self.config.model_config, preprocessing=self.config.preprocessing, meta=meta
        )

    def _save_encrypted(self, path: Path, vector: EncryptedVector, meta: dict[str, Any]) -> None:
        """The encrypted global model with what a site needs to decrypt it into a checkpoint."""
        atomic_write_bytes(
            path,
            transport.file_bytes(
                vector,
                model=self.config.model_config.to_json(),
                preprocessing=self.config.preprocessing.to_json(),
                **meta,
            ),
        )

    def save_models(
        self, server_round: int, model: Model, *, validation_dice: float | None, best_validation_dice: float | None
    ) -> float | None:
        """Write the last model (and the best, when validation improved), then the resume point.

        With encrypted aggregation the files are ``.he`` ciphertexts. Returns the best score so far.
        """
        meta = self._meta(server_round, validation_dice)
        encrypted = isinstance(model, EncryptedVector)
        save = self._save_encrypted if encrypted else self._save_plain
        save(self.last_encrypted if encrypted else self.last, model, meta)  # type: ignore[arg-type]
        if validation_dice is not None and (best_validation_dice is None or validation_dice > best_validation_dice):
            best_validation_dice = validation_dice
            save(self.best_encrypted if encrypted else self.best, model, meta)  # type: ignore[arg-type]
        atomic_torch_save(
            sealed(
                {
                    "round": server_round,
                    "weights": None if encrypted else dict(model),  # type: ignore[arg-type]
                    "encrypted": transport.to_bytes(model) if encrypted else None,  # type: ignore[arg-type]
                    "best_validation_dice": best_validation_dice,
                }
            ),
            self.server_state,
        )
        return best_validation_dice

    def rounds_done(self) -> list[dict[str, Any]]:
        return read_jsonl(self.rounds) if self.rounds.exists() else []
