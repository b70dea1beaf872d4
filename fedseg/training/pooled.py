"""Pooled training: the centralised reference that every federated result is compared to.

It runs the same local-training code a site runs (``LocalTrainer``), over the pooled centres,
so Mean Teacher and DP-SGD behave here exactly as in the federation.

Run folder::

    config.json        the TrainConfig (a resumed run must match it)
    manifest.json      the splits
    log.jsonl          one line per logged step and per validation
    privacy.jsonl      the privacy ledger (with --dp-epsilon): one line per checkpoint interval
    checkpoints/last.pt, best.pt     self-describing model checkpoints
    checkpoints/resume.pt            model, optimiser and local state for --resume
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fedseg.configuration import ConfigError
from fedseg.data.layout import data_folders
from fedseg.devices import resolve_device
from fedseg.evaluation.scoring import mean_dice, score_records
from fedseg.files import append_jsonl, atomic_torch_save, atomic_write_json, read_jsonl, write_jsonl
from fedseg.integrity import DamagedFileError, sealed
from fedseg.models.checkpoint import Preprocessing, save_checkpoint
from fedseg.models.state import unwrap
from fedseg.outputs import check_output_folder, inputs_protected
from fedseg.privacy.budget import PrivacyBudgetExhausted
from fedseg.tracking import DEFAULT_TRACKING, flatten, open_tracker
from fedseg.tracking.metrics import step_metrics
from fedseg.training.config import TrainConfig
from fedseg.training.data import RunData, prepare_run_data
from fedseg.training.local import LocalConfig, LocalState, LocalTrainer
from fedseg.training.run_folder import StartPlan, load_resume_point, plan_start
from fedseg.volumes.inference import make_predictor
from fedseg.volumes.plan import volume_mode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run: Path
    steps: int
    best_val_dice: float | None
    last_checkpoint: Path
    epsilon: float | None = None


class RunFolder:
    """Paths of a training run's files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.manifest = self.root / "manifest.json"
        self.log = self.root / "log.jsonl"
        self.privacy = self.root / "privacy.jsonl"
        self.last = self.root / "checkpoints" / "last.pt"
        self.best = self.root / "checkpoints" / "best.pt"
        self.resume = self.root / "checkpoints" / "resume.pt"


def preprocessing_of(config: TrainConfig, *, volumes: bool = False) -> Preprocessing:
    """How the run's inputs are prepared; for volumes, 2.5D slice stacks or 3D by the model's dimensions."""
    return Preprocessing(
        channels=config.data.channels,
        resize=config.data.resize,
        normalisation=config.data.normalisation,
        mode=volume_mode(config.model.spatial_dims) if volumes else "2d",
        spacing=config.data.volume.spacing,
        percentiles=config.data.volume.percentiles,
    )


def local_config_of(config: TrainConfig) -> LocalConfig:
    return LocalConfig(
        loss=config.loss,
        optim=config.optim,
        batch_size=config.batch_size,
        mean_teacher=config.mean_teacher,
        privacy=config.privacy,
    )


def validate(model: torch.nn.Module, config: TrainConfig, data: RunData, device: torch.device) -> float | None:
    """Mean Dice over the run's validation images (None when there are none)."""
    if not data.val:
        return None
    by_centre: dict[str, list] = {}
    for record in data.val:
        by_centre.setdefault(record.centre, []).append(record)
    predictor = make_predictor(
        unwrap(model),
        preprocessing_of(config, volumes=data.volumes),
        config.tiling,
        tta=False,
        device=device,
        patch_slices=config.data.volume.patch_slices,
    )
    results = [score_records(predictor, records, with_hd95=False, progress=False) for records in by_centre.values()]
    model.train()
    return mean_dice(results)


class PooledTrainer:
    """Holds the state of one pooled run; ``run()`` trains to ``config.steps``."""

    def __init__(
        self, config: TrainConfig, *, resume: bool = False, progress: bool = True, tracking: str = DEFAULT_TRACKING
    ) -> None:
        self.config, self.progress = config, progress
        self.folder = RunFolder(config.out)
        plan = self._plan(resume)
        saved = load_resume_point(plan.resume_point) if plan.resume_point else None
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.data = prepare_run_data(
            config.data,
            plan.saved_manifest,
            include_unlabelled=config.mean_teacher is not None,
            spatial_dims=config.model.spatial_dims,
            progress=progress,
        )
        self.best: float | None = saved["best"] if saved else None
        self.trainer = LocalTrainer(
            model_config=config.model,
            config=local_config_of(config),
            dataset=self.data.train,
            device=self.device,
            seed=config.seed,
            planned_steps=config.steps,
            schedule_steps=config.steps,
            workers=config.workers,
            initial_weights=saved["model"] if saved else None,
            state=_local_state_of(saved, self.folder.resume) if saved else None,
        )
        if saved:
            self.trainer.optimizer.load_state_dict(saved["optimizer"])
            logger.info("resumed %s at step %d", self.folder.root, self.step)
        if saved:
            self._check_budget()
        self.ledger_step = self.step  # the privacy ledger accounts for every step up to here
        self._begin(plan)
        self.tracker = open_tracker(tracking, run_folder=self.folder.root, experiment="pooled")
        self.tracker.log_params(flatten(config.to_json()))

    def _check_budget(self) -> None:
        """Steps asked for past a resumed run's privacy budget are refused before the folder changes."""
        remaining = self.config.steps - self.step
        try:
            self.trainer.check_budget(remaining)
        except PrivacyBudgetExhausted as exhausted:
            most = self.step + _most_steps(self.trainer, remaining)
            raise ConfigError(
                f"{self.folder.root}: --steps {self.config.steps} would take the run past its privacy budget: "
                f"epsilon {exhausted.spent:.4f} spent by step {self.step}, {exhausted.projected:.4f} at step "
                f"{self.config.steps}, budget {exhausted.budget:.4f}. Resume with --steps {most} or fewer, or "
                "start a new run (another --out) with a larger --dp-epsilon. Nothing was changed."
            ) from None

    def _plan(self, resume: bool) -> StartPlan:
        folder = self.folder
        return plan_start(
            folder.root,
            config=folder.config,
            manifest=folder.manifest,
            log=folder.log,
            resume_point=folder.resume,
            current=self.config.to_json(),
            resume=resume,
        )

    def _begin(self, plan: StartPlan) -> None:
        """Training starts: only now the folder gets its settings and split (a failed start writes nothing)."""
        atomic_write_json(self.folder.config, self.config.to_json())
        if plan.resume_point is None:
            self.data.manifest.save(self.folder.manifest)
        if self.folder.log.exists():  # lines of steps after the resume point were never saved: drop them
            lines = read_jsonl(self.folder.log)
            kept = [line for line in lines if int(line.get("step", 0)) <= self.step]
            if len(kept) < len(lines):
                write_jsonl(self.folder.log, kept)

    @property
    def step(self) -> int:
        return self.trainer.state.step

    def _meta(self) -> dict[str, Any]:
        """What a checkpoint records about its run: step, crop size, and where its validation images are."""
        return {
            "step": self.step,
            "crop_size": self.config.data.crop.size,
            "data_root": str(self.config.data.root.resolve()),
            "centres": list(self.config.data.centres),
            "manifest": str(self.folder.manifest.resolve()),
            "patch_slices": self.config.data.volume.patch_slices,
        }

    def _save(self) -> None:
        model = unwrap(self.trainer.student)
        save_checkpoint(
            self.folder.last,
            model=model,
            model_config=self.config.model,
            preprocessing=preprocessing_of(self.config, volumes=self.data.volumes),
            meta={**self._meta(), "best_val_dice": self.best},
        )
        atomic_torch_save(
            sealed(
                {
                    "model": self.trainer.weights(),
                    "optimizer": self.trainer.optimizer.state_dict(),
                    "local_state": self.trainer.export_state().to_bytes(),
                    "best": self.best,
                }
            ),
            self.folder.resume,
        )

    def _validate(self) -> None:
        dice = validate(self.trainer.student, self.config, self.data, self.device)
        append_jsonl(self.folder.log, {"step": self.step, "event": "validation", "val_dice": dice})
        self.tracker.log_metrics({"validation/dice": dice}, step=self.step)
        if dice is not None and (self.best is None or dice > self.best):
            self.best = dice
            save_checkpoint(
                self.folder.best,
                model=unwrap(self.trainer.student),
                model_config=self.config.model,
                preprocessing=preprocessing_of(self.config, volumes=self.data.volumes),
                meta={**self._meta(), "val_dice": dice},
            )

    def _ledger(self) -> None:
        """A ledger row for the steps since the last one (every checkpoint, and on an interrupt)."""
        privacy, steps = self.trainer.state.privacy, self.step - self.ledger_step
        if privacy is None or steps == 0:
            return
        self.ledger_step = self.step
        epsilon = privacy.epsilon()
        append_jsonl(
            self.folder.privacy,
            {
                "site": "pooled",
                "round": -(-self.step // self.config.checkpoint_every),  # the checkpoint interval it ends in
                "step": self.step,
                "sampling_rate": privacy.sample_rate,
                "noise_multiplier": privacy.noise_multiplier,
                "steps": steps,
                "epsilon": epsilon,
                "delta": privacy.delta,
                "epsilon_budget": privacy.epsilon_budget,
                "budget_left": privacy.epsilon_budget - epsilon,
                "accountant": privacy.accountant,
            },
        )
        self.tracker.log_metrics({"privacy/epsilon/pooled": epsilon}, step=self.step)

    def _next_stop(self) -> int:
        every = [self.config.checkpoint_every] + ([self.config.val_every] if self.config.val_every else [])
        stops = [(self.step // k + 1) * k for k in every] + [self.config.steps]
        return min(stops)

    def run(self) -> TrainResult:
        config = self.config
        bar = tqdm(
            total=config.steps, initial=self.step, desc="train", unit="step", disable=None if self.progress else True
        )
        window: list[tuple[float, float]] = []

        def on_step(trainer: LocalTrainer, supervised: float, consistency: float) -> None:
            bar.update(1)
            window.append((supervised, consistency))
            if trainer.state.step % config.log_every == 0 or trainer.state.step == config.steps:
                record = {
                    "step": trainer.state.step,
                    "loss": sum(w[0] for w in window) / len(window),
                    "consistency": sum(w[1] for w in window) / len(window),
                    "lr": trainer._lr(),
                }
                append_jsonl(self.folder.log, record)
                self.tracker.log_metrics(step_metrics(record), step=trainer.state.step)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                window.clear()

        try:
            while self.step < config.steps:
                stop = self._next_stop()
                self.trainer.run(stop - self.step, on_step=on_step)
                if config.val_every and (self.step % config.val_every == 0 or self.step == config.steps):
                    self._validate()
                if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                    self._ledger()
                    self._save()
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM through fedseg.signals
            self._ledger()
            self._save()
            logger.warning(
                "%s at step %d; saved %s: continue with the same command and --resume",
                interrupt or "interrupted",
                self.step,
                self.folder.resume,
            )
            raise
        finally:
            bar.close()
        folder = self.folder
        self.tracker.log_artifacts([folder.last, folder.best, folder.log, folder.privacy, folder.manifest])
        self.tracker.close()
        privacy = self.trainer.state.privacy
        return TrainResult(
            run=self.folder.root,
            steps=self.step,
            best_val_dice=self.best,
            last_checkpoint=self.folder.last,
            epsilon=privacy.epsilon() if privacy else None,
        )


def _most_steps(trainer: LocalTrainer, limit: int) -> int:
    """The most steps (below ``limit``) that stay within the trainer's privacy budget."""
    low, high = 0, limit  # low fits, high does not
    while high - low > 1:
        middle = (low + high) // 2
        try:
            trainer.check_budget(middle)
            low = middle
        except PrivacyBudgetExhausted:
            high = middle
    return low


def _local_state_of(saved: dict[str, Any], path: Path) -> LocalState:
    """The trainer state in ``resume.pt``; files from fedseg before 0.1.0 kept only the step."""
    try:
        if "local_state" in saved:
            return LocalState.from_bytes(saved["local_state"])
        return LocalState(step=int(saved["step"]))
    except Exception as error:  # a damaged file from before resume points had checksums
        raise DamagedFileError(f"{path}: damaged trainer state ({type(error).__name__}: {error}).") from None


def train(
    config: TrainConfig, *, resume: bool = False, progress: bool = True, tracking: str = DEFAULT_TRACKING
) -> TrainResult:
    """Train on the pooled centres of ``config.data`` and write the run folder ``config.out``.

    The run folder may not be one of the data's folders, and nothing is written into them.
    ``tracking``: 'tensorboard' (event files in the run folder), 'mlflow:URI' (and MLflow) or 'none'.
    """
    folders = data_folders(config.data.root, config.data.centres)
    check_output_folder(config.out, folders)
    with inputs_protected(folders=folders):
        return PooledTrainer(config, resume=resume, progress=progress, tracking=tracking).run()
