from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fedseg.configuration import ConfigError
from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.splits import SplitConfig
from fedseg.files import read_jsonl
from fedseg.inference.sliding_window import TilingConfig
from fedseg.models import ModelConfig
from fedseg.models.checkpoint import load_checkpoint
from fedseg.privacy import PrivacyConfig
from fedseg.training import pooled
from fedseg.training.config import TrainConfig
from fedseg.training.local import LocalTrainer
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.training.run_folder import load_resume_point
from tests.tracking.test_tracking import scalars_of

TINY = ModelConfig(name="unet", options={"widths": [8, 16, 32]})
TINIEST = ModelConfig(name="unet", options={"widths": [4, 8]})


def tiny_config(root: Path, out: Path, **overrides: object) -> TrainConfig:
    data = DataConfig(
        root=root, centres=("STARE", "AV-WIDE"), crop=CropConfig(size=64), split=SplitConfig(val_fraction=0.25)
    )
    values = dict(
        data=data,
        out=out,
        model=TINY,
        steps=4,
        batch_size=2,
        workers=0,
        val_every=2,
        checkpoint_every=2,
        log_every=1,
        device="cpu",
        tiling=TilingConfig(tile_size=64),
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_run_folder_holds_config_manifest_log_and_checkpoints(retina_crops: Path, tmp_path: Path) -> None:
    result = pooled.train(tiny_config(retina_crops, tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    assert result.steps == 4 and result.best_val_dice is not None
    config = json.loads((run / "config.json").read_text())
    assert TrainConfig.from_json(config) == tiny_config(retina_crops, run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["centres"]) == {"STARE", "AV-WIDE"}
    log = read_jsonl(run / "log.jsonl")
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in log if r.get("event") == "validation"] == [2, 4]
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last.meta["step"] == 4 and last.model == TINY
    assert load_checkpoint(run / "checkpoints" / "best.pt").meta["val_dice"] == result.best_val_dice
    scalars = scalars_of(run / "tensorboard")  # tracking: event files by default
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in scalars["validation/dice"]] == [2, 4]
    assert max(v for _, v in scalars["validation/dice"]) == pytest.approx(result.best_val_dice)


def test_crash_and_resume_gives_the_uninterrupted_result(
    retina_crops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.use_deterministic_algorithms(True)
    try:
        pooled.train(tiny_config(retina_crops, tmp_path / "whole", val_every=0), progress=False)
        calls = {"n": 0}
        real_step = LocalTrainer.train_step

        def crashing_step(self: LocalTrainer, batch: object) -> tuple:
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("power cut")
            return real_step(self, batch)

        monkeypatch.setattr(LocalTrainer, "train_step", crashing_step)
        config = tiny_config(retina_crops, tmp_path / "crashed", val_every=0)
        with pytest.raises(RuntimeError, match="power cut"):
            pooled.train(config, progress=False)
        monkeypatch.setattr(LocalTrainer, "train_step", real_step)
        pooled.train(config, resume=True, progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt").state_dict
    resumed = load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.pt").state_dict
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_existing_run_needs_resume_and_resume_needs_same_settings(retina_crops: Path, tmp_path: Path) -> None:
    config = tiny_config(retina_crops, tmp_path / "run", steps=2, val_every=0)
    pooled.train(config, progress=False)
    with pytest.raises(ConfigError, match=r"holds a run already \(checkpoints/resume.pt\). Pass --resume"):
        pooled.train(config, progress=False)
    with pytest.raises(ConfigError, match=r"other settings \(batch_size: 2 in config.json, 3 now\)"):
        pooled.train(replace(config, batch_size=3), resume=True, progress=False)
    with pytest.raises(ConfigError, match="nothing to resume"):
        pooled.train(replace(config, out=tmp_path / "other"), resume=True, progress=False)


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(retina_crops: Path, tmp_path: Path) -> None:
    """A config.json written by an older fedseg lacks the Mean Teacher settings added since (e.g.
    ``teacher_follows``): resuming reads them as their defaults, and a real difference is still refused."""
    config = tiny_config(
        retina_crops, tmp_path / "run", steps=2, val_every=0, mean_teacher=MeanTeacherConfig(rampup_steps=2)
    )
    pooled.train(config, progress=False, tracking="none")
    saved_path = tmp_path / "run" / "config.json"
    saved = json.loads(saved_path.read_text())
    for name in ("teacher_follows", "round_blend", "dp_balance"):
        del saved["mean_teacher"][name]
    saved_path.write_text(json.dumps(saved))
    result = pooled.train(replace(config, steps=4), resume=True, progress=False, tracking="none")
    assert result.steps == 4
    with pytest.raises(ConfigError, match="mean_teacher.ema_decay: 0.99 in config.json, 0.9 now"):
        changed = replace(config, steps=6, mean_teacher=MeanTeacherConfig(rampup_steps=2, ema_decay=0.9))
        pooled.train(changed, resume=True, progress=False, tracking="none")


def test_training_learns_synthetic_vessels(synth_root: Path, tmp_path: Path) -> None:
    data = DataConfig(
        root=synth_root, centres=("centre-01",), crop=CropConfig(size=64), split=SplitConfig(val_fraction=0.34)
    )
    config = TrainConfig(
        data=data,
        out=tmp_path / "run",
        model=TINY,
        steps=100,
        batch_size=4,
        workers=0,
        val_every=100,
        checkpoint_every=100,
        device="cpu",
        tiling=TilingConfig(tile_size=96),
    )
    result = pooled.train(config, progress=False)
    # An untrained model predicts no foreground at all (Dice 0); 100 steps must find the vessels.
    assert result.best_val_dice is not None and result.best_val_dice > 0.3


def test_resume_files_without_local_state_resume_at_their_step() -> None:
    from fedseg.training.local import LocalState
    from fedseg.training.pooled import _local_state_of

    resume = Path("checkpoints/resume.pt")
    assert _local_state_of({"model": {}, "optimizer": {}, "step": 900, "best": 0.7}, resume).step == 900
    current = {"local_state": LocalState(step=12).to_bytes()}
    assert _local_state_of(current, resume).step == 12


class Killed(BaseException):
    """The process dies at a write (SIGKILL): nothing after it runs, no handler sees it."""


WRITERS = ("append_jsonl", "atomic_torch_save", "save_checkpoint")


def _spy_writes(monkeypatch: pytest.MonkeyPatch, kill_at: int | None, seen: list[str]) -> None:
    """Count (and name) pooled training's writes; raise ``Killed`` instead of write number ``kill_at``."""
    for name in WRITERS:
        real = getattr(pooled, name)

        def write(*args: object, _real=real, **kwargs: object) -> object:
            target = next(a for a in (*args, *kwargs.values()) if isinstance(a, Path))
            seen.append(target.name)
            if len(seen) == kill_at:
                raise Killed
            return _real(*args, **kwargs)

        monkeypatch.setattr(pooled, name, write)


def _on_disk(run: Path) -> tuple[list[int], int, int]:
    """Steps of the model files on disk, the resume point's step, and the ledger's last step."""
    models = [load_checkpoint(p).meta["step"] for p in (run / "checkpoints").glob("*.pt") if p.name != "resume.pt"]
    resume = run / "checkpoints" / "resume.pt"
    resumed = pooled._local_state_of(load_resume_point(resume), resume).step if resume.exists() else 0
    rows = read_jsonl(run / "privacy.jsonl") if (run / "privacy.jsonl").exists() else []
    return models, resumed, rows[-1]["step"] if rows else 0


def test_a_run_killed_at_any_write_of_a_checkpoint_never_holds_a_model_the_ledger_misses(
    retina_crops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(out: Path) -> TrainConfig:
        data = DataConfig(
            root=retina_crops, centres=("STARE",), crop=CropConfig(size=32), split=SplitConfig(val_fraction=0.25)
        )
        return tiny_config(
            retina_crops,
            out,
            data=data,
            model=TINIEST,
            privacy=PrivacyConfig(epsilon=8.0),
            mean_teacher=MeanTeacherConfig(),  # teacher-last.pt and a teacher best.pt are written too
            steps=2,
            checkpoint_every=1,
            val_every=1,
            log_every=100,
        )

    seen: list[str] = []
    _spy_writes(monkeypatch, None, seen)
    pooled.train(config(tmp_path / "clean"), progress=False)
    first_last = seen.index("last.pt")  # the writes after it belong to the second checkpoint (step 2)
    for kill_at in range(first_last + 2, len(seen) + 1):
        run, seen = tmp_path / f"killed-at-{kill_at}", []
        _spy_writes(monkeypatch, kill_at, seen)
        with pytest.raises(Killed):
            pooled.train(config(run), progress=False)
        models, resumed, ledger = _on_disk(run)
        assert all(step <= min(resumed, ledger) for step in models), f"killed before writing {seen[-1]}"
        _spy_writes(monkeypatch, None, [])
        result = pooled.train(config(run), resume=True, progress=False)
        rows = read_jsonl(run / "privacy.jsonl")
        assert sum(row["steps"] for row in rows) == rows[-1]["step"] == result.steps == 2
        assert rows[-1]["epsilon"] == pytest.approx(result.epsilon, rel=1e-12)
        models, resumed, ledger = _on_disk(run)
        assert all(step <= ledger for step in models) and resumed == ledger == 2


def test_mean_teacher_run_scores_saves_and_releases_the_better_of_student_and_teacher(
    retina_crops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both models are validated (really: the teacher stays in eval mode), the teacher is saved, and best.pt
    holds whichever scored best. The scores are then replaced by fixed ones so that the teacher of step 2 wins."""
    real_validate, scored = pooled.validate, []
    fixed = iter([0.3, 0.6, 0.5, 0.1])  # student, teacher at step 2; student, teacher at step 4

    def validate(model: torch.nn.Module, *args: object) -> float | None:
        training = model.training
        assert real_validate(model, *args) is not None and model.training == training
        scored.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(fixed)

    monkeypatch.setattr(pooled, "validate", validate)
    config = tiny_config(retina_crops, tmp_path / "run", mean_teacher=MeanTeacherConfig(rampup_steps=2))
    result = pooled.train(config, progress=False, tracking="none")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert result.best_val_dice == 0.6 and result.teacher_checkpoint == checkpoints / "teacher-last.pt"
    rows = [r for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r.get("event") == "validation"]
    assert [(r["student_dice"], r["teacher_dice"], r["val_dice"], r["weights"]) for r in rows] == [
        (0.3, 0.6, 0.6, "teacher"),
        (0.5, 0.1, 0.5, "student"),
    ]
    best = load_checkpoint(checkpoints / "best.pt")
    assert best.meta["weights"] == "teacher" and best.meta["step"] == 2 and best.meta["val_dice"] == 0.6
    assert all(torch.equal(best.state_dict[k], scored[1][k]) for k in scored[1])
    teacher, student = load_checkpoint(checkpoints / "teacher-last.pt"), load_checkpoint(checkpoints / "last.pt")
    assert (teacher.meta["weights"], teacher.meta["step"], student.meta["weights"]) == ("teacher", 4, "student")
    assert all(torch.equal(teacher.state_dict[k], scored[3][k]) for k in scored[3])
    assert all(torch.equal(student.state_dict[k], scored[2][k]) for k in scored[2])
    assert any(not torch.equal(teacher.state_dict[k], student.state_dict[k]) for k in scored[2])
