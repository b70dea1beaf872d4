"""Issue 15, cases 8, 9 and 12: DP settings that cannot work are refused or warned about by name, an
interrupted run's ledger accounts for every step, and a resume past the budget changes nothing."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from fedseg.cli import main
from fedseg.privacy.accountant import epsilon_of, smallest_epsilon
from fedseg.privacy.ledger import read_ledger
from fedseg.signals import Interrupted
from fedseg.training.local import LocalTrainer
from tests.robustness.conftest import fingerprints, train_args


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# -- 8: an epsilon no noise can reach is refused; one that needs absurd noise is warned about --------
def test_8_an_unreachable_epsilon_is_refused_naming_the_option_and_a_tiny_one_warns(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    assert 0.008 < smallest_epsilon(1e-5) < 0.009  # the RDP accountant's floor at delta 1e-5
    before = fingerprints(dataset)
    code, message = run(train_args(dataset, tmp_path / "low", "--dp-epsilon", "0.0001"), capsys)
    assert code == 2 and "dp epsilon 0.0001 cannot be reached" in message and "Raise --dp-epsilon" in message
    assert "The privacy budget is too low" not in message  # Opacus' own words name neither option nor fix
    assert not (tmp_path / "low").exists() or not any((tmp_path / "low").rglob("*"))

    code, message = run(train_args(dataset, tmp_path / "tiny", "--dp-epsilon", "0.01"), capsys)
    warned = message + caplog.text
    assert code == 0 and "the model will learn next to nothing" in warned and "Raise --dp-epsilon" in warned
    assert fingerprints(dataset) == before


# -- 9: a ledger row on interrupt: the rows add up to every step trained ----------------------------
def test_9_after_an_interrupt_and_resume_the_ledger_rows_count_every_step(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    options = {"steps": "6", "checkpoint_every": "3", "val_every": "0"}
    real_step, calls = LocalTrainer.train_step, {"n": 0}

    def interrupted_step(self: LocalTrainer, batch: object) -> tuple:
        calls["n"] += 1
        if calls["n"] == 5:  # Ctrl-C during step 5: steps 1-4 were trained
            raise Interrupted(signal.SIGINT)
        return real_step(self, batch)

    monkeypatch.setattr(LocalTrainer, "train_step", interrupted_step)
    code, message = run(train_args(dataset, out, "--dp-epsilon", "50", **options), capsys)
    assert code == 130 and "--resume" in message
    monkeypatch.setattr(LocalTrainer, "train_step", real_step)
    assert run(train_args(dataset, out, "--dp-epsilon", "50", "--resume", **options), capsys)[0] == 0

    rows = read_ledger(out)
    assert [(r.round, r.step, r.steps) for r in rows] == [(1, 3, 3), (2, 4, 1), (2, 6, 2)]
    history = [(rows[0].noise_multiplier, rows[0].sampling_rate, sum(r.steps for r in rows))]
    assert rows[-1].epsilon == pytest.approx(epsilon_of(history, delta=rows[0].delta), rel=1e-9)
    code, table = run(["privacy", "--run", str(out)], capsys)
    assert code == 0 and len([line for line in table.splitlines() if line.startswith("pooled")]) == 3


# -- 12: --resume --steps past the budget is refused before anything changes -------------------------
def test_12_resume_past_the_budget_is_refused_with_the_most_steps_and_changes_nothing(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    options = {"checkpoint_every": "2", "val_every": "0"}
    assert run(train_args(dataset, out, "--dp-epsilon", "5", **options), capsys)[0] == 0
    before = fingerprints(dataset, out)
    code, message = run(train_args(dataset, out, "--dp-epsilon", "5", "--resume", steps="41", **options), capsys)
    assert code == 2 and str(out) in message and "--steps 41 would take the run past its privacy budget" in message
    assert "Traceback" not in message and "Nothing was changed" in message
    assert fingerprints(dataset, out) == before  # config.json keeps its steps
    most = int(message.split("Resume with --steps ")[1].split()[0])
    assert 2 <= most < 41
    assert run(train_args(dataset, out, "--dp-epsilon", "5", "--resume", steps=str(most), **options), capsys)[0] == 0
    assert read_ledger(out)[-1].epsilon <= 5.0
