"""Pooled training: the centralised reference that every federated result is compared to.

Run folder::

    config.json        the TrainConfig (a resumed run must match it)
    manifest.json      the splits
    log.jsonl          one line per logged step and per validation
    checkpoints/last.pt, best.pt     self-describing model checkpoints
    checkpoints/resume.pt            model, optimiser and schedule state for --resume
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fedseg.configuration import ConfigError
from fedseg.data.crops import BatchKeys, TrainingCrops
from fedseg.devices import resolve_device
from fedseg.evaluation.scoring import mean_dice, score_records
from fedseg.files import append_jsonl, atomic_torch_save, atomic_write_json
from fedseg.losses import FocalDiceLoss
from fedseg.models import build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint
from fedseg.models.state import clean_state_dict
from fedseg.training.config import TrainConfig
from fedseg.training.data import RunData, prepare_run_data
from fedseg.training.engine import supervised_step
from fedseg.training.schedule import build_optimizer, build_scheduler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run: Path
    steps: int
    best_val_dice: float | None
    last_checkpoint: Path


class RunFolder:
    """Paths of a training run's files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.manifest = self.root / "manifest.json"
        self.log = self.root / "log.jsonl"
        self.last = self.root / "checkpoints" / "last.pt"
        self.best = self.root / "checkpoints" / "best.pt"
        self.resume = self.root / "checkpoints" / "resume.pt"


def _check_run_folder(config: TrainConfig, run: RunFolder, resume: bool) -> None:
    if resume:
        if not run.resume.exists():
            raise ConfigError(f"{run.root}: nothing to resume (no checkpoints/resume.pt). Drop --resume to start.")
        saved = json.loads(run.config.read_text())
        current = config.to_json()
        changed = sorted(k for k in current if k != "steps" and saved.get(k) != current.get(k))
        if changed:
            raise ConfigError(f"{run.root}: --resume needs the same settings as the run it resumes; changed: {changed}")
    elif run.resume.exists() or run.log.exists():
        raise ConfigError(f"{run.root}: holds a run already. Pass --resume to continue it, or choose another --out.")


def preprocessing_of(config: TrainConfig) -> Preprocessing:
    return Preprocessing(
        channels=config.data.channels, resize=config.data.resize, normalisation=config.data.normalisation
    )


def _validate(model: torch.nn.Module, config: TrainConfig, data: RunData, device: torch.device) -> float | None:
    if not data.val:
        return None
    model.eval()
    by_centre: dict[str, list] = {}
    for record in data.val:
        by_centre.setdefault(record.centre, []).append(record)
    results = [
        score_records(
            model,
            preprocessing_of(config),
            records,
            tiling=config.tiling,
            device=device,
            with_hd95=False,
            progress=False,
        )
        for records in by_centre.values()
    ]
    model.train()
    return mean_dice(results)


class PooledTrainer:
    """Holds the state of one pooled run; ``run()`` trains to ``config.steps``."""

    def __init__(self, config: TrainConfig, *, resume: bool = False, progress: bool = True) -> None:
        self.config, self.progress = config, progress
        self.folder = RunFolder(config.out)
        _check_run_folder(config, self.folder, resume)
        self.folder.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder.config, config.to_json())
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.data = prepare_run_data(config.data, self.folder.manifest, progress=progress)
        self.dataset = TrainingCrops(
            self.data.train, crop=config.data.crop, augment=config.data.augment, normalisation=config.data.normalisation
        )
        self.model = build_model(config.model).to(self.device)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.steps, config.optim)
        self.loss_fn = FocalDiceLoss.from_config(config.loss, reduction="none")
        self.step: int = 0
        self.best: float | None = None
        if resume:
            self._load_resume()

    def _load_resume(self) -> None:
        state = torch.load(self.folder.resume, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best = int(state["step"]), state["best"]
        logger.info("resumed %s at step %d", self.folder.root, self.step)

    def _save(self) -> None:
        meta = {"step": self.step, "best_val_dice": self.best, "crop_size": self.config.data.crop.size}
        save_checkpoint(
            self.folder.last,
            model=self.model,
            model_config=self.config.model,
            preprocessing=preprocessing_of(self.config),
            meta=meta,
        )
        atomic_torch_save(
            {
                "model": clean_state_dict(self.model.state_dict()),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "best": self.best,
            },
            self.folder.resume,
        )

    def _maybe_validate(self) -> None:
        dice = _validate(self.model, self.config, self.data, self.device)
        append_jsonl(self.folder.log, {"step": self.step, "event": "validation", "val_dice": dice})
        if dice is not None and (self.best is None or dice > self.best):
            self.best = dice
            save_checkpoint(
                self.folder.best,
                model=self.model,
                model_config=self.config.model,
                preprocessing=preprocessing_of(self.config),
                meta={"step": self.step, "val_dice": dice, "crop_size": self.config.data.crop.size},
            )

    def _loader(self) -> DataLoader:
        keys = BatchKeys(
            len(self.dataset), self.config.batch_size, seed=self.config.seed, start=self.step, stop=self.config.steps
        )
        return DataLoader(
            self.dataset, batch_sampler=keys, num_workers=self.config.workers, pin_memory=self.device.type == "cuda"
        )

    def run(self) -> TrainResult:
        config = self.config
        self.model.train()
        bar = tqdm(total=config.steps, initial=self.step, desc="train", unit="step", disable=not self.progress)
        started, losses = time.perf_counter(), []
        try:
            for batch in self._loader():
                losses.append(
                    supervised_step(
                        self.model, batch, loss_fn=self.loss_fn, optimizer=self.optimizer, device=self.device
                    )
                )
                self.scheduler.step()
                self.step += 1
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    elapsed = time.perf_counter() - started
                    record = {
                        "step": self.step,
                        "loss": sum(losses) / len(losses),
                        "lr": self.scheduler.get_last_lr()[0],
                        "seconds_per_step": elapsed / len(losses),
                    }
                    append_jsonl(self.folder.log, record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                    started, losses = time.perf_counter(), []
                if config.val_every and (self.step % config.val_every == 0 or self.step == config.steps):
                    self._maybe_validate()
                if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                    self._save()
        except KeyboardInterrupt:
            logger.warning("interrupted at step %d; saving so that --resume continues from here", self.step)
            self._save()
            raise
        finally:
            bar.close()
        return TrainResult(
            run=self.folder.root, steps=self.step, best_val_dice=self.best, last_checkpoint=self.folder.last
        )


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train on the pooled centres of ``config.data`` and write the run folder ``config.out``."""
    return PooledTrainer(config, resume=resume, progress=progress).run()
