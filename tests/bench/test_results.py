"""RESULTS.md: rows below local-only training carry the facts their runs recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.bench.results import explain, write_results

TABLE = "accuracy/retina/CHASE_DB1"


def row(label: str, dice: float, federation: dict | None = None) -> dict:
    result = {
        "id": label.replace(" ", "-"),
        "table": TABLE,
        "label": label,
        "kind": "federated",
        "seed": 0,
        "heldout": {"dice": dice, "dice_ci95": [dice - 0.01, dice + 0.01]},
        "privacy": None,
        "seconds": 60.0,
    }
    if federation is not None:
        result["federation"] = federation
    return result


def sites(**facts: dict) -> dict:
    return {"rounds": 24, "rounds_with_sites_left_out": [], "sites": facts}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (sites(A={"examples": 17, "labelled": 4}), "labelled images per site A 4 of 17"),
        (
            sites(A={"examples": 17, "labelled": 17, "noise_multiplier": 8.1, "sample_rate": 0.47}),
            "DP-SGD noise multiplier A 8.1 at sampling rate 0.47 of 17 images.",
        ),
        (
            {**sites(A={"examples": 9, "labelled": 9}), "rounds_with_sites_left_out": [9, 10]},
            "left out in round(s) 9, 10",
        ),
        (sites(A={"examples": 9, "labelled": 9}), "its run recorded no cause: not explained."),
        (None, "its run recorded no cause: not explained."),
    ],
)
def test_explain_names_what_the_run_recorded(record: dict | None, expected: str) -> None:
    assert expected in explain(record)


def test_every_row_below_local_only_gets_a_note_and_no_other_row_does(tmp_path: Path) -> None:
    results = [
        row("local only: STARE", 0.73, sites(STARE={"examples": 17, "labelled": 17})),
        row("local only: AV-WIDE", 0.60, sites(**{"AV-WIDE": {"examples": 26, "labelled": 26}})),
        row("FedAvg", 0.74, sites(STARE={"examples": 17, "labelled": 17})),
        row("FedAvg + 25 % labels", 0.65, sites(STARE={"examples": 17, "labelled": 4})),
        row("pooled", 0.70),
    ]
    for result in results:
        (tmp_path / f"{result['id']}.json").write_text(json.dumps(result))
    text = (write_results(tmp_path, "cpu")).read_text()
    notes = [line for line in text.splitlines() if line.startswith("- **")]
    assert [n.split("**")[1] for n in notes] == ["FedAvg + 25 % labels", "pooled"]  # below 0.73, the best local-only
    assert "STARE 4 of 17" in notes[0] and "not explained" in notes[1]
