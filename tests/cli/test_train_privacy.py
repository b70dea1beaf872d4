"""`fedseg train` under DP, as a hospital engineer meets it: budgets too small, resumes past the budget, Ctrl-C."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedseg.cli import main
from fedseg.files import read_jsonl
from fedseg.training.local import LocalTrainer


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "train", "--data", str(data), "--centres", "STARE", "--out", str(out), "--crop-size", "32",
            "--batch-size", "2", "--val-fraction", "0.25", "--model-option", "widths=[4,8]", "--tile-size", "64",
            "--workers", "0", "--device", "cpu", "--val-every", "0", *extra,
        ]
    )  # fmt: skip


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_too_small_an_epsilon_is_a_clear_error_and_hopeless_noise_a_warning(
    retina_crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data_before = _digests(retina_crops)
    assert _train(retina_crops, tmp_path / "run", "--steps", "50", "--dp-epsilon", "0.0001") == 2
    error = capsys.readouterr().err
    assert "dp epsilon 0.0001 cannot be reached" in error and "Raise --dp-epsilon" in error and "Traceback" not in error
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "privacy.jsonl").exists()
    assert _digests(retina_crops) == data_before
    # A budget that can be met but only with noise far above the signal trains, with a warning.
    assert _train(retina_crops, tmp_path / "run", "--steps", "1", "--dp-epsilon", "0.05") == 0
    assert "will learn next to nothing" in capsys.readouterr().out


def test_resume_past_the_budget_is_refused_before_anything_changes(
    retina_crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert _train(retina_crops, run, "--steps", "2", "--dp-epsilon", "3") == 0
    before = _digests(run)
    assert _train(retina_crops, run, "--steps", "100000", "--dp-epsilon", "3", "--resume") == 2
    error = capsys.readouterr().err
    assert "--steps 100000 would take the run past its privacy budget" in error
    assert "or fewer" in error and "Traceback" not in error and "PrivacyBudgetExhausted" not in error
    assert _digests(run) == before  # config.json keeps its steps; nothing else was touched


def test_an_interrupted_run_writes_a_ledger_row_and_the_rows_add_up_after_resume(
    retina_crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    real_step, calls = LocalTrainer.train_step, {"n": 0}

    def interrupted_step(self: LocalTrainer, batch: object) -> tuple:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second step
        return real_step(self, batch)

    monkeypatch.setattr(LocalTrainer, "train_step", interrupted_step)
    options = ("--steps", "4", "--checkpoint-every", "4", "--dp-epsilon", "8")
    assert _train(retina_crops, run, *options) == 130
    output = capsys.readouterr()
    assert "saving so that --resume continues from here" in output.out and "interrupted" in output.err
    written = (run / "privacy.jsonl").read_text()
    assert [row["steps"] for row in read_jsonl(run / "privacy.jsonl")] == [1]
    monkeypatch.setattr(LocalTrainer, "train_step", real_step)
    assert _train(retina_crops, run, *options, "--resume") == 0
    assert (run / "privacy.jsonl").read_text().startswith(written)  # earlier rows unchanged
    rows = read_jsonl(run / "privacy.jsonl")
    assert [row["steps"] for row in rows] == [1, 3] and rows[-1]["step"] == 4
    assert main(["privacy", "--run", str(run)]) == 0
    assert "epsilon is per image" in capsys.readouterr().out
