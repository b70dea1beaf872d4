"""Pooled training: the centralised reference that every federated result is compared to.

It runs the same local-training code a site runs (``LocalTrainer``), over the pooled centres,
so Mean Teacher and DP-SGD behave here exactly as in the federation.

Run folder::

    config.json        the TrainConfig (a resumed run must match it)
    manifest.json      the splits
    log.jsonl          one line per logged step and per validation (with Mean Teacher: student and teacher)
    privacy.jsonl      the privacy ledger (with --dp-epsilon): a row per checkpoint, best model and interrupt
    checkpoints/last.pt, best.pt     self-describing model checkpoints: the student's last weights, and the
                                     best validated model (student or, with Mean Teacher, teacher: meta 'weights')
    checkpoints/teacher-last.pt      with Mean Teacher: the teacher's last weights
    checkpoints/resume.pt            model, optimiser and local state (with the accountant) for --resume

Order of writes: ``resume.pt`` (which holds the accountant and the teacher), then its ledger row, then
``best.pt``, ``last.pt`` and ``teacher-last.pt``, so that a crash between two writes never leaves a
model on disk whose steps the ledger does not hold. The teacher is an average of DP students:
post-processing, it costs no privacy. Under DP the batches are drawn from OS entropy: a resumed run counts every
step in the same ledger and ends at the same epsilon, with other batches than an uninterrupted run.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fedseg.configuration import ConfigError
from fedseg.data.grouping import subject_ids
from fedseg.data.layout import data_folders
from fedseg.devices import resolve_device
from fedseg.evaluation.scoring import mean_dice, score_records
from fedseg.files import append_jsonl, atomic_torch_save, atomic_write_json, read_jsonl, write_jsonl
from fedseg.integrity import DamagedFileError, sealed
from fedseg.models.checkpoint import load_checkpoint, save_checkpoint
from fedseg.models.state import unwrap
from fedseg.outputs import check_output_folder, inputs_protected
from fedseg.privacy.budget import PrivacyBudgetExhausted
from fedseg.tracking import DEFAULT_TRACKING, flatten, open_tracker
from fedseg.tracking.metrics import step_metrics
from fedseg.training.config import TrainConfig
from fedseg.training.data import RunData, prepare_run_data
from fedseg.training.initial import initial_weights
from fedseg.training.local import LocalState, LocalTrainer
from fedseg.training.run_folder import StartPlan, load_resume_point, plan_start
from fedseg.volumes.inference import make_predictor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run: Path
    steps: int
    best_val_dice: float | None
    last_checkpoint: Path
    epsilon: float | None = None
    best_checkpoint: Path | None = None  # the better validated model (None without validation)
    teacher_checkpoint: Path | None = None  # with Mean Teacher: the teacher's last weights


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
        self.teacher_last = self.root / "checkpoints" / "teacher-last.pt"
        self.resume = self.root / "checkpoints" / "resume.pt"


def validate(model: torch.nn.Module, config: TrainConfig, data: RunData, device: torch.device) -> float | None:
    """Mean Dice over the run's validation images (None when there are none); the model keeps its mode."""
    if not data.val:
        return None
    training = model.training
    by_centre: dict[str, list] = {}
    for record in data.val:
        by_centre.setdefault(record.centre, []).append(record)
    predictor = make_predictor(
        unwrap(model),
        config.preprocessing(volumes=data.volumes),
        config.tiling,
        tta=False,
        device=device,
        patch_slices=config.data.volume.patch_slices,
    )
    results = [score_records(predictor, records, with_hd95=False, progress=False) for records in by_centre.values()]
    model.train(training)
    return mean_dice(results)


def with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config.json with the settings an older fedseg did not write filled with their defaults
    (unchanged where it no longer reads as a config: the settings check then names the difference)."""
    try:
        return TrainConfig.from_json(saved).to_json()
    except (TypeError, ValueError, KeyError):
        return saved


class PooledTrainer:
    """Holds the state of one pooled run; ``run()`` trains to ``config.steps``."""

    def __init__(
        self, config: TrainConfig, *, resume: bool = False, progress: bool = True, tracking: str = DEFAULT_TRACKING
    ) -> None:
        self.config, self.progress = config, progress
        self.folder = RunFolder(config.out)
        plan = self._plan(resume)
        saved = load_resume_point(plan.resume_point) if plan.resume_point else None
        start = self._initial_weights() if saved is None else None
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
        self.best_step: int | None = saved.get("best_step") if saved else None
        self.best_weights: str = saved.get("best_weights", "student") if saved else "student"
        self.trainer = LocalTrainer(
            model_config=config.model,
            config=config.local_config,
            dataset=self.data.train,
            device=self.device,
            seed=config.seed,
            planned_steps=config.steps,
            schedule_steps=config.steps,
            workers=config.workers,
            initial_weights=saved["model"] if saved else start,
            state=_local_state_of(saved, self.folder.resume) if saved else None,
            subjects=subject_ids(self.data.train.sources, config.data.split.group_patterns),
        )
        if saved:
            self.trainer.optimizer.load_state_dict(saved["optimizer"])
            logger.info("resumed %s at step %d", self.folder.root, self.step)
            self._check_budget()
        self._begin(plan)
        self.tracker = open_tracker(tracking, run_folder=self.folder.root, experiment="pooled")
        self.tracker.log_params(flatten(config.to_json()))
        self.ledger_step = self._ledger_so_far()
        if saved:
            self._ledger()  # a crash between resume.pt and its ledger row: write the row now
            self._repair_best()

    def _initial_weights(self) -> OrderedDict[str, torch.Tensor] | None:
        """A new run's starting weights: those of ``--init`` (checked against the run's model), else random."""
        if self.config.init_checkpoint is None:
            return None
        preprocessing = self.config.preprocessing(volumes=False)
        return initial_weights(Path(self.config.init_checkpoint), self.config.model, preprocessing)

    def _check_budget(self) -> None:
        """Steps asked for past a resumed run's privacy budget are refused before the folder changes."""
        private = self.trainer.private
        try:
            self.trainer.check_budget(self.config.steps - self.step)
        except PrivacyBudgetExhausted as exhausted:
            allowed = private.accountant.max_more_steps() if private is not None else 0
            raise ConfigError(
                f"{self.folder.root}: --steps {self.config.steps} would take the run past its privacy budget "
                f"(--dp-epsilon {exhausted.budget:g}): epsilon {exhausted.spent:.4f} spent by step {self.step}, "
                f"{exhausted.projected:.4f} at step {self.config.steps}; the budget allows {allowed} more steps. "
                f"Resume with --steps {self.step + allowed} or fewer, or start a new run (another --out) with a "
                "larger --dp-epsilon. Nothing was changed in the run folder."
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
            complete=with_defaults,
        )

    def _begin(self, plan: StartPlan) -> None:
        """Training starts: only now the folder gets its settings and split (a failed start writes nothing)."""
        atomic_write_json(self.folder.config, self.config.to_json())
        if plan.resume_point is None:
            self.data.manifest.save(self.folder.manifest)
        if self.folder.log.exists():  # lines of steps after the resume point were never saved: drop them
            _drop_after(self.folder.log, self.step)

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

    def _save_resume(self) -> None:
        """The resume point: model, optimiser, local state (the accountant) and the best score so far."""
        atomic_torch_save(
            sealed(
                {
                    "model": self.trainer.weights(),
                    "optimizer": self.trainer.optimizer.state_dict(),
                    "local_state": self.trainer.export_state().to_bytes(),
                    "best": self.best,
                    "best_step": self.best_step,
                    "best_weights": self.best_weights,
                }
            ),
            self.folder.resume,
        )

    def _models(self) -> dict[str, torch.nn.Module]:
        """The models a run can release: the student, and with Mean Teacher its teacher."""
        models = {"student": unwrap(self.trainer.student)}
        if self.trainer.teacher is not None:
            models["teacher"] = self.trainer.teacher
        return models

    def _save_model(self, path: Path, meta: dict[str, Any], weights: str = "student") -> None:
        save_checkpoint(
            path,
            model=self._models()[weights],
            model_config=self.config.model,
            preprocessing=self.config.preprocessing(volumes=self.data.volumes),
            meta={**self._meta(), **meta, "weights": weights},
        )

    def _save_best(self) -> None:
        self._save_model(self.folder.best, {"val_dice": self.best}, self.best_weights)

    def _checkpoint(self, *, best: bool, last: bool) -> None:
        """Resume point, ledger row, then the model files (see the module's order of writes)."""
        self._save_resume()
        self._ledger()
        if best:
            self._save_best()
        if last:
            self._save_model(self.folder.last, {"best_val_dice": self.best})
            if self.trainer.teacher is not None:
                self._save_model(self.folder.teacher_last, {"best_val_dice": self.best}, "teacher")

    def _repair_best(self) -> None:
        """A crash between resume.pt and best.pt: the resumed model is the best one; write it."""
        if self.best_step != self.step:
            return
        if self.folder.best.exists() and load_checkpoint(self.folder.best).meta.get("step") == self.step:
            return
        self._save_best()

    def _validate(self) -> bool:
        """Validate the student (and teacher); True when the better of them is the best model so far
        (the caller then writes it to best.pt). Ties go to the student."""
        scores = {name: validate(model, self.config, self.data, self.device) for name, model in self._models().items()}
        weights = _released(scores)
        dice = scores[weights]
        record: dict[str, Any] = {"step": self.step, "event": "validation", "val_dice": dice}
        metrics: dict[str, Any] = {"validation/dice": dice}
        if len(scores) > 1:
            record.update({f"{name}_dice": score for name, score in scores.items()}, weights=weights)
            metrics.update({f"validation/{name}_dice": score for name, score in scores.items()})
        append_jsonl(self.folder.log, record)
        self.tracker.log_metrics(metrics, step=self.step)
        if dice is None or (self.best is not None and dice <= self.best):
            return False
        self.best, self.best_step, self.best_weights = dice, self.step, weights
        return True

    def _ledger_so_far(self) -> int:
        """The DP-SGD step of the ledger's last row (0 without one); rows past the resume point are dropped."""
        if self.trainer.private is None or not self.folder.privacy.exists():
            return 0
        rows = _drop_after(self.folder.privacy, self.step)
        return int(rows[-1].get("step", 0)) if rows else 0

    def _ledger(self) -> None:
        """A ledger row for the DP-SGD steps since the last row (none without DP or without new steps)."""
        private = self.trainer.private
        if private is None or self.step <= self.ledger_step:
            return
        interval = -(-self.step // self.config.checkpoint_every)  # the checkpoint interval the row ends in
        row = private.ledger_row(site="pooled", round=interval, steps=self.step - self.ledger_step)
        append_jsonl(self.folder.privacy, row.to_json())
        self.tracker.log_metrics({"privacy/epsilon/pooled": row.epsilon}, step=self.step)
        self.ledger_step = self.step

    def _next_stop(self) -> int:
        every = [self.config.checkpoint_every] + ([self.config.val_every] if self.config.val_every else [])
        stops = [(self.step // k + 1) * k for k in every] + [self.config.steps]
        return min(stops)

    def _interrupted(self, interrupt: KeyboardInterrupt) -> None:
        logger.warning(
            "%s at step %d; saving so that --resume continues from here (%s): run the same command with --resume",
            str(interrupt) or "interrupted",
            self.step,
            self.folder.resume,
        )
        self._checkpoint(best=False, last=True)

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
                self.trainer.run(self._next_stop() - self.step, on_step=on_step)
                end = self.step == config.steps
                best = bool(config.val_every) and (self.step % config.val_every == 0 or end) and self._validate()
                last = self.step % config.checkpoint_every == 0 or end
                if best or last:
                    self._checkpoint(best=best, last=last)
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM through fedseg.signals
            self._interrupted(interrupt)
            raise
        finally:
            bar.close()
        folder = self.folder
        self.tracker.log_artifacts(
            [folder.last, folder.best, folder.teacher_last, folder.log, folder.privacy, folder.manifest]
        )
        self.tracker.close()
        private = self.trainer.private
        return TrainResult(
            run=self.folder.root,
            steps=self.step,
            best_val_dice=self.best,
            last_checkpoint=self.folder.last,
            epsilon=private.epsilon() if private else None,
            best_checkpoint=folder.best if self.best is not None else None,
            teacher_checkpoint=folder.teacher_last if self.trainer.teacher is not None else None,
        )


def _released(scores: dict[str, float | None]) -> str:
    """The model to release: the best scoring (the first one, the student, on ties and without scores)."""
    ranked = {name: -1.0 if score is None else score for name, score in scores.items()}
    return max(ranked, key=ranked.__getitem__)


def _drop_after(path: Path, step: int) -> list[dict[str, Any]]:
    """Keep the JSON-lines records of ``path`` up to ``step`` (later ones were written past the resume point)."""
    records = read_jsonl(path)
    kept = [record for record in records if int(record.get("step", 0)) <= step]
    if len(kept) < len(records):
        write_jsonl(path, kept)
    return kept


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
