"""The results suite: its profiles, its resumable parts, and a tiny slice of the quick profile end to end."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.files import atomic_torch_save
from fedseg.integrity import sealed
from fedseg.models import ModelConfig
from fedseg.models.checkpoint import load_checkpoint
from fedseg.training.config import OptimConfig, TrainConfig
from simulations.bench import parts
from simulations.bench.results import write_results
from simulations.bench.run_all import (
    CPU,
    FULL,
    QUICK,
    Experiment,
    all_experiments,
    plan,
    planned_part,
    pooled_train_config,
    show_plan,
    work_of,
)
from tests.conftest import REPO, require_shared_data

SLICE = "accuracy-retina-chase-db1--pooled--seed0@steps-1-72"
HEADLINE_ROWS = {"pooled", "+ HE", "+ HE + DP (epsilon 8)"}


def test_the_suite_covers_the_required_tables() -> None:
    for scale in (FULL, CPU):
        experiments = all_experiments(scale)
        assert {
            "pooled",
            "FedAvg",
            "FedAvg + 25 % labels",
            "FedAvg + 25 % labels + Mean Teacher",
            "+ DP (epsilon 8)",
            "+ DP (epsilon 3)",
            "+ HE",
            "+ HE + DP (epsilon 8)",
        } <= {e.label for e in experiments}
        assert {e.table for e in experiments} >= {
            "accuracy/retina/CHASE_DB1",
            "accuracy/retina/STARE",
            "accuracy/retina/AV-WIDE",
            "accuracy/polyp/Kvasir-SEG/test",
            "privacy/polyp",
            "cost",
        }
        for table in ("accuracy/retina/CHASE_DB1", "accuracy/polyp/Kvasir-SEG/test"):
            seeds = {
                label: {e.seed for e in experiments if e.table == table and e.label == label} for label in HEADLINE_ROWS
            }
            assert seeds == {label: {0, 1, 2} for label in HEADLINE_ROWS}  # three seeds for the headline rows
    assert {e.label for e in all_experiments(CPU) if e.table == "privacy/polyp"} == {
        "epsilon 1",
        "epsilon 3",
        "epsilon 8",
        "epsilon 30",
        "no DP",
    }
    assert "32" in CPU.cost["sites"].split(",")
    assert SLICE in {part.name for part in plan(QUICK)}


def test_the_cpu_profile_trains_every_row_at_least_the_time_to_dice_budget() -> None:
    # issue 11's federated run that reached 0.70: 24 rounds x 30 local steps at batch 8, crops of 256
    assert CPU.rounds * CPU.local_steps >= 24 * 30 and CPU.batch_size >= 8 and CPU.crop_size == 256
    assert CPU.run_config["evaluate-every"] == 4 and CPU.retina_resize == 0
    for experiment in all_experiments(CPU):
        work = work_of(CPU, experiment)
        if work.unit == "rounds":
            assert work.total == 24
        elif work.unit == "steps":  # pooled: the federation's compute, rounds x local steps at every site
            assert work.total == 24 * 30 * experiment.settings["sites"] >= 1440


def test_a_pooled_row_trains_the_steps_its_plan_counts(tmp_path: Path) -> None:
    require_shared_data()
    for experiment in [e for e in all_experiments(CPU) if e.kind == "pooled"]:
        config = pooled_train_config(CPU, experiment, tmp_path)
        assert config.steps == work_of(CPU, experiment).total == 720 * experiment.settings["sites"]
        assert config.optim.schedule == "onecycle" and config.checkpoint_every == config.steps // 4


def test_the_cpu_plan_cuts_every_row_into_parts_of_at_most_ten_minutes() -> None:
    cpu_plan = plan(CPU)
    assert len({p.name for p in cpu_plan}) == len(cpu_plan)
    by_row: dict[str, list[parts.Part]] = {}
    for part in cpu_plan:
        by_row.setdefault(part.experiment, []).append(part)
    assert set(by_row) == {e.id for e in all_experiments(CPU)}
    for row in by_row.values():
        assert row[0].first == 1 and row[-1].last == row[-1].total and row[-1].final
        assert all(a.last + 1 == b.first for a, b in zip(row, row[1:]))  # contiguous: nothing skipped or repeated
        assert all(p.minutes <= parts.PLAN_MINUTES or p.first == p.last for p in row)
    assert max(p.minutes for p in cpu_plan) < parts.PART_MINUTES
    federated = [p for p in cpu_plan if p.unit == "rounds"]
    assert any(not p.final for p in federated)  # 24 rounds do not fit one part: rows resume across parts
    assert [p.name for p in plan(CPU, ["cost"])] == ["cost--dp-overhead", "cost--he-overhead", "cost--sites-scaling"]
    headline = plan(CPU, ["accuracy/retina/CHASE_DB1"])
    assert headline == cpu_plan[: len(headline)]  # the headline table runs first


@pytest.mark.parametrize(
    ("dp", "mean_teacher", "factor"), [(False, False, 1.0), (True, False, 2.1), (False, True, 2.5), (True, True, 2.7)]
)
def test_a_steps_cost_with_dp_and_mean_teacher_is_the_measured_factor_not_a_product(
    dp: bool, mean_teacher: bool, factor: float
) -> None:
    assert parts.COSTS.step_factor(dp=dp, mean_teacher=mean_teacher) == factor


def test_the_plan_prices_a_mean_teacher_round_as_two_cores_measured_it() -> None:
    # rounds.jsonl of the STARE-held-out Mean Teacher row on 2 cores: 134-155 s a round without scoring
    # (the old product of factors planned 70 s, and every part overran its ten minutes)
    row = "accuracy-retina-stare--fedavg--25--labels--mean-teacher--seed0"
    work = work_of(CPU, next(e for e in all_experiments(CPU) if e.id == row))
    assert 130 <= work.seconds[0] <= 160
    # CHASE_DB1-held-out DP epsilon 8 row (Mean Teacher too): 131-160 s
    row = "accuracy-retina-chase-db1--dp-epsilon-8--seed0"
    work = work_of(CPU, next(e for e in all_experiments(CPU) if e.id == row))
    assert 130 <= work.seconds[0] <= 165


def test_cut_fits_the_budget_and_keeps_at_least_one_unit_per_part() -> None:
    work = parts.Work("row", "rounds", 5, 1, (100.0, 100.0, 400.0, 100.0, 100.0), start=50.0, final=40.0)
    cut = parts.cut(work, budget_minutes=5.0)  # 300 s
    assert [(p.first, p.last) for p in cut] == [(1, 2), (3, 3), (4, 5)]
    assert [round(p.minutes * 60) for p in cut] == [250, 450, 290]  # a unit over budget still gets a part
    steps = parts.Work("pooled", "steps", 100, 30, (30.0,) * 4, start=0.0, final=0.0)
    assert [(p.first, p.last) for p in parts.cut(steps, budget_minutes=1.0)] == [(1, 60), (61, 100)]


def test_a_part_named_by_an_older_plan_is_refused_naming_the_part_and_the_fix() -> None:
    assert planned_part(CPU, SLICE.replace("-1-72", "-1-510")).first == 1
    with pytest.raises(SystemExit, match=r"part row@rounds-16-20 is not in the cpu profile's plan any more.*--plan"):
        planned_part(CPU, "row@rounds-16-20")


def test_progress_records_attempts_and_done_parts(tmp_path: Path) -> None:
    part = parts.Part("row@rounds-1-6", "row", "rounds", 1, 6, 24, 8.0)
    assert not parts.record(tmp_path, part, reached=4, seconds=600.0)  # stopped at the time limit
    assert not parts.is_done(tmp_path, part)
    assert parts.record(tmp_path, part, reached=6, seconds=120.0)
    assert parts.is_done(tmp_path, part)
    entry = parts.read_progress(tmp_path)[part.name]
    assert entry["attempts"] == 2 and entry["seconds"] == 720.0 and entry["reached"] == 6
    assert parts.row_seconds(tmp_path, "row") == 720.0
    longer = parts.Part("row@rounds-1-6", "row", "rounds", 1, 6, 30, 8.0)  # the same part of a longer row
    assert not parts.is_done(tmp_path, longer)


def test_pooled_training_runs_in_parts_and_resumes(synth_root: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        data=DataConfig(root=synth_root, centres=("centre-01", "centre-02"), crop=CropConfig(size=32)),
        out=tmp_path / "run",
        model=ModelConfig(options={"widths": [4, 8]}),
        optim=OptimConfig(lr=3e-3, schedule="onecycle"),
        steps=6,
        batch_size=2,
        device="cpu",
        workers=0,
        val_every=0,
        checkpoint_every=6,
    )
    far = time.monotonic() + 300
    assert parts.train_until(config, parts.Stop(4, far), chunk=2) == 4
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").meta["step"] == 4
    assert parts.train_until(config, parts.Stop(6, far), chunk=2) == 6  # resumed from step 4
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").meta["step"] == 6
    assert parts.train_until(config, parts.Stop(6, time.monotonic() - 1), chunk=2) == 6  # past the deadline


def test_results_say_which_rows_are_not_run_yet_and_that_quick_numbers_are_not_results(tmp_path: Path) -> None:
    pending = [
        ("accuracy/retina/CHASE_DB1", "pooled"),
        ("privacy/polyp", "epsilon 8"),
        ("cost", "encrypted aggregation"),
    ]
    text = write_results(tmp_path, "cpu", pending=pending).read_text()
    assert "| pooled | not run yet |" in text and "| epsilon 8 | not run yet |" in text
    assert "| encrypted aggregation | not run yet |" in text and "24 rounds x 30 local steps" in text
    quick = write_results(tmp_path, "quick").read_text()
    assert "NOT results" in quick.splitlines()[2] and "--profile cpu" in quick


@pytest.mark.slow  # about 25 s on a quiet 2-core machine (two processes that import torch, 36 steps, scoring)
def test_a_quick_slice_runs_as_a_part_and_its_files_parse(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    require_shared_data()
    command = [sys.executable, "-m", "simulations.bench.run_all", "--profile", "quick", "--out", str(tmp_path)]
    completed = subprocess.run([*command, "--part", SLICE], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    row = json.loads((tmp_path / f"{SLICE.split('@')[0]}.json").read_text())
    assert row["heldout"]["n_images"] == 28 and 0 <= row["heldout"]["dice"] <= 1
    low, high = row["heldout"]["dice_ci95"]
    assert low <= row["heldout"]["dice"] <= high and row["seconds"] > 0
    machine = f"{os.cpu_count()}-core {platform.machine()} CPU"  # every row names what it ran on
    assert row["machine"] == machine
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress[SLICE]["done"] and progress[SLICE]["reached"] == 72
    results = (tmp_path / "RESULTS.md").read_text()
    assert "NOT results" in results
    table = [line for line in results.splitlines() if line.startswith("| pooled |")]
    assert len(table) == 1 and float(table[0].split("|")[2]) == round(row["heldout"]["dice"], 3)
    assert table[0].endswith(f"({machine}) |")
    assert "| FedAvg | not run yet |" in results and "| encrypted aggregation | not run yet |" in results
    assert (tmp_path / "accuracy-retina-CHASE_DB1.png").stat().st_size > 1000
    show_plan(QUICK, tmp_path)
    assert f"done  {SLICE}" in capsys.readouterr().out


def test_saved_round_is_the_round_of_the_servers_resume_point(tmp_path: Path) -> None:
    assert parts.saved_round(tmp_path) == 0
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "rounds.jsonl").write_text('{"round": 1}\n{"round": 2}\n')  # round 2 logged, not yet saved
    atomic_torch_save(
        sealed({"round": 1, "weights": {}, "encrypted": None, "best_validation_dice": None}),
        tmp_path / "checkpoints" / "server.pt",
    )
    assert parts.saved_round(tmp_path) == 1
    time.sleep(0.01)
    atomic_torch_save(
        sealed({"round": 2, "weights": {}, "encrypted": None, "best_validation_dice": None}),
        tmp_path / "checkpoints" / "server.pt",
    )
    assert parts.saved_round(tmp_path) == 2


@pytest.mark.parametrize("run_ends_by_itself", [False, True])
def test_a_federation_stopped_by_its_part_is_asked_to_drop_the_round_in_progress_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_ends_by_itself: bool
) -> None:
    """Sites stopped mid-round fail; without the STOP file the server recorded such a round with a site
    "left out" (a held-out score lost in the STARE-held-out Mean Teacher row, round 4)."""
    from simulations import launch

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "flwr").write_text("#!/bin/sh\n" + ("exit 0\n" if run_ends_by_itself else "exec sleep 60\n"))
    (fake_bin / "flwr").chmod(0o755)
    stop_file_when_stopped: list[bool] = []
    monkeypatch.setattr(launch, "bin_dir", lambda: fake_bin)
    monkeypatch.setattr(launch, "write_flower_config", lambda port: None)
    monkeypatch.setattr(launch, "start_superlink", lambda port: None)
    monkeypatch.setattr(launch, "stop", lambda _: stop_file_when_stopped.append((run / "STOP").exists()))
    run = tmp_path / "run"
    config = {"out": str(run), "num-server-rounds": 24, "site-map": "A,B,heldout:C"}
    assert parts.simulate_until(config, parts.Stop(4, time.monotonic() + 3.0)) == 0
    assert stop_file_when_stopped == [not run_ends_by_itself]


def test_a_part_stopped_at_the_time_limit_runs_again_while_it_makes_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simulations.bench import run_all

    def attempts_reaching(part: parts.Part, reached_each_time: list[int]) -> list[int]:
        """Replace the part's process with one that records the next ``reached``; returns the attempts made."""
        attempts: list[int] = []

        def run(command: list[str], **_: object) -> int:
            assert command[-2:] == ["--one-part", part.name]
            attempts.append(reached_each_time[len(attempts)])
            parts.record(tmp_path, part, reached=attempts[-1], seconds=600.0)
            return 0

        monkeypatch.setattr(run_all, "run_child", run)
        return attempts

    part = next(p for p in plan(QUICK) if p.unit == "rounds")
    attempts = attempts_reaching(part, [1, 2, part.last])
    assert run_all.run_to_the_end(QUICK, part, tmp_path) and attempts == [1, 2, part.last]
    assert parts.read_progress(tmp_path)[part.name]["attempts"] == 3
    stuck = parts.Part("stuck@rounds-1-3", "stuck", "rounds", 1, 3, 3, 1.0)
    attempts = attempts_reaching(stuck, [1, 1, 1])
    assert not run_all.run_to_the_end(QUICK, stuck, tmp_path) and attempts == [1, 1]  # no progress: gives up


def test_dp_rows_and_the_privacy_curve_start_from_the_public_prior_and_nothing_else_does() -> None:
    from simulations.bench.run_all import starts_from_prior

    for scale in (CPU, FULL):
        from_prior = {e.id for e in all_experiments(scale) if starts_from_prior(e)}
        assert {e.id for e in all_experiments(scale) if "dp-epsilon" in e.settings} <= from_prior
        assert {e.id for e in all_experiments(scale) if e.table.startswith("privacy")} <= from_prior
        others = {e.label for e in all_experiments(scale) if e.id not in from_prior and e.kind != "bench"}
        assert others and not any("DP" in label for label in others)


def test_a_dp_row_is_configured_to_start_from_a_prior_made_from_generated_images_only(tmp_path: Path) -> None:
    from simulations.bench.run_all import federated_run_config

    row = next(e for e in all_experiments(QUICK) if e.settings.get("dp-epsilon") and not e.settings.get("he"))
    config = federated_run_config(QUICK, row, tmp_path / "work" / row.id)
    prior = Path(config["init-checkpoint"])
    assert prior == tmp_path / "work" / f"prior-{row.settings['task']}" / "prior.pt"
    meta = load_checkpoint(prior).meta
    assert meta["prior"]["generator"] == "fedseg.data.synth" and meta["prior"]["steps"] == QUICK.prior_steps
    assert meta["prior"]["kind"] == {"retina": "vessels", "polyp": "blobs"}[row.settings["task"]]
    options = load_checkpoint(prior).model.options
    assert {k: options[k] for k in json.loads(QUICK.model_options)} == json.loads(QUICK.model_options)
    made = prior.stat().st_mtime_ns
    again = federated_run_config(QUICK, row, tmp_path / "work" / "another-row")  # made once per task
    assert again["init-checkpoint"] == str(prior) and prior.stat().st_mtime_ns == made
    check_the_prior_is_scored_once_per_centre_and_seed(row, tmp_path / "work", prior)


def check_the_prior_is_scored_once_per_centre_and_seed(row: Experiment, work: Path, prior: Path) -> None:
    from simulations.bench import run_all

    scored: list[Path] = []

    def score(_scale: object, experiment: Experiment, checkpoint: Path, _work: Path) -> dict:
        scored.append(checkpoint)
        return {"dice": 0.444 + experiment.seed, "dice_ci95": [0.432, 0.457]}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_all, "score", score)
        first = run_all.prior_score(QUICK, row, work)
        assert run_all.prior_score(QUICK, row, work) == first == {"dice": 0.444, "dice_ci95": [0.432, 0.457]}
        assert run_all.prior_score(QUICK, replace(row, seed=1), work)["dice"] == 1.444
    assert scored == [prior, prior]  # kept beside the prior: seed 0 scored once, seed 1 once


def test_device_override_reaches_the_processes_the_suite_starts(tmp_path: Path) -> None:
    from dataclasses import replace

    from simulations.bench.run_all import self_command

    assert "--device" not in self_command(CPU, tmp_path)
    command = self_command(replace(CPU, device="cuda"), tmp_path)
    assert command[command.index("--device") + 1] == "cuda" and command[command.index("--profile") + 1] == "cpu"


def test_a_federation_that_stopped_early_is_not_a_row(tmp_path: Path) -> None:
    from simulations.bench.run_all import check_finished, federation_record

    row = next(e for e in all_experiments(CPU) if e.kind == "federated")
    work = tmp_path / row.id
    (work / "run").mkdir(parents=True)
    facts = {"examples": 17, "labelled": 4, "noise_multiplier": 8.1, "sample_rate": 0.47, "epsilon": 5.0}
    rounds = [
        {"round": r, "train": {"STARE": facts}, "left_out": {"AV-WIDE": "failed"} if r == 8 else {}}
        for r in range(1, 12)
    ]
    (work / "run" / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    with pytest.raises(RuntimeError, match=r"stopped after round 11 of 24; .*summary\.md"):
        check_finished(CPU, row, work)
    record = federation_record(work)
    assert record["rounds_with_sites_left_out"] == [8]
    assert record["sites"] == {"STARE": {k: v for k, v in facts.items() if k != "epsilon"}}
    rounds += [{"round": r, "train": {"STARE": facts}} for r in range(12, CPU.rounds + 1)]
    for line in rounds[3::4]:  # the held-out centre scored every 4th round
        line["heldout"] = {"CHASE_DB1": {"n_images": 28, "dice": line["round"] / 100}}
    (work / "run" / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    assert check_finished(CPU, row, work)["heldout_curve"] == [[r, r / 100] for r in range(4, 25, 4)]


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_sigterm_stops_the_suite_and_every_process_of_its_simulation(tmp_path: Path) -> None:
    """A stopped suite leaves no SuperLink or Ray behind to eat a 2-core machine (it did: killed parts ran on)."""
    require_shared_data()
    part = "accuracy-retina-chase-db1--fedavg--seed0@rounds-1-3"
    command = [sys.executable, "-m", "simulations.bench.run_all", "--quick", "--out", str(tmp_path), "--part", part]
    env = {**os.environ, "FEDSEG_FLWR_HOME": str(tmp_path / "flwr")}
    suite = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, started = time.monotonic() + 300, set()
    while time.monotonic() < deadline and not any(_is_ray(pid) for pid in started):
        time.sleep(2)
        started = _descendants(suite.pid)
    assert any(_is_ray(pid) for pid in started), "the simulation's Ray did not start within 5 minutes"
    suite.send_signal(signal.SIGTERM)
    output, _ = suite.communicate(timeout=150)
    assert suite.returncode == 143 and "run the same command again to resume" in output
    assert (tmp_path / "work" / part.split("@")[0] / "run" / "STOP").exists()  # the round in progress is dropped
    time.sleep(2)
    left = [pid for pid in started if Path(f"/proc/{pid}").exists() and "<defunct>" not in _cmdline(pid)]
    assert not left, [_cmdline(pid) for pid in left]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() or "<defunct>"
    except OSError:
        return "<gone>"


def _is_ray(pid: int) -> bool:
    return "raylet" in _cmdline(pid)
