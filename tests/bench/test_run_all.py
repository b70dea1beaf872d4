"""A tiny slice of the results suite, end to end: experiments run, their files parse, RESULTS.md is built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from simulations.bench.run_all import FULL, QUICK, all_experiments
from tests.conftest import REPO, require_shared_data

SLICE = ("accuracy-retina-chase-db1--pooled--seed0", "cost--dp-overhead")


def test_the_suite_covers_the_required_tables() -> None:
    full = all_experiments(FULL)
    labels = {e.label for e in full}
    assert {
        "pooled",
        "FedAvg",
        "FedAvg + 25 % labels",
        "FedAvg + 25 % labels + Mean Teacher",
        "+ DP (epsilon 8)",
        "+ DP (epsilon 3)",
        "+ HE",
    } <= labels
    assert {e.table for e in full} >= {
        "accuracy/retina/CHASE_DB1",
        "accuracy/retina/STARE",
        "accuracy/retina/AV-WIDE",
        "accuracy/polyp/Kvasir-SEG/test",
        "privacy/polyp",
        "cost",
    }
    headline = [e for e in full if e.table == "accuracy/retina/CHASE_DB1" and e.label == "pooled"]
    assert len(headline) == 3  # three seeds for the headline rows
    assert {e.id for e in all_experiments(QUICK)} >= set(SLICE)


def test_a_quick_slice_runs_and_its_files_parse(tmp_path: Path) -> None:
    require_shared_data()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations.bench.run_all",
            "--quick",
            "--out",
            str(tmp_path),
            "--only",
            ",".join(SLICE),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    pooled = json.loads((tmp_path / f"{SLICE[0]}.json").read_text())
    assert pooled["heldout"]["n_images"] == 28 and 0 <= pooled["heldout"]["dice"] <= 1
    low, high = pooled["heldout"]["dice_ci95"]
    assert low <= pooled["heldout"]["dice"] <= high
    cost = json.loads((tmp_path / f"{SLICE[1]}.json").read_text())
    assert [row["variant"] for row in cost["results"]] == ["plain", "dp", "dp+mean-teacher"]
    results = (tmp_path / "RESULTS.md").read_text()
    assert "| pooled |" in results and "| dp+mean-teacher |" in results
    assert (tmp_path / "accuracy-retina-CHASE_DB1.png").stat().st_size > 1000
    listing = subprocess.run(
        [sys.executable, "-m", "simulations.bench.run_all", "--quick", "--out", str(tmp_path), "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(f"done  {experiment}" in listing for experiment in SLICE)
