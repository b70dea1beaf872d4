"""RESULTS.md: rows below local-only training carry the facts their runs recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.bench.results import explain, minutes_by_machine, minutes_text, within_noise, write_results

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
        (sites(A={"examples": 4, "labelled": 4}), "its run recorded no cause: not explained."),
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


def test_a_row_that_started_from_the_prior_names_the_priors_own_score() -> None:
    record = sites(A={"examples": 17, "labelled": 4, "noise_multiplier": 8.1, "sample_rate": 0.47})
    text = explain(record, {"dice": 0.444, "dice_ci95": [0.432, 0.457]})
    assert text.startswith("it started from the public prior (generated images only), which alone scores 0.444")
    assert "(0.432–0.457)" in text and "DP-SGD noise multiplier A 8.1" in text


def test_a_pooled_row_below_local_only_names_its_centres_shares_and_their_local_scores(tmp_path: Path) -> None:
    pooled = {**row("pooled", 0.70), "kind": "pooled", "pooled": {"labelled": {"STARE": 17, "AV-WIDE": 26}}}
    for result in (row("local only: STARE", 0.73), row("local only: AV-WIDE", 0.47), pooled):
        (tmp_path / f"{result['id']}.json").write_text(json.dumps(result))
    notes = [line for line in write_results(tmp_path, "cpu").read_text().splitlines() if line.startswith("- **")]
    assert notes == [
        "- **pooled** (0.700, below 0.730): its batches are drawn from the pooled labelled images in proportion: "
        "STARE 17 (40 %; alone it scores 0.730 here), AV-WIDE 26 (60 %; alone it scores 0.470 here)."
    ]


def test_rows_keep_the_suites_order_and_show_the_seeds_still_to_run(tmp_path: Path) -> None:
    for result in (row("+ DP (epsilon 8)", 0.40), row("local only: STARE", 0.73), row("pooled", 0.70)):
        (tmp_path / f"{result['id']}.json").write_text(json.dumps(result))
    order = [
        (TABLE, label) for label in ("local only: STARE", "pooled", "pooled", "pooled", "FedAvg", "+ DP (epsilon 8)")
    ]
    pending = [(TABLE, "pooled"), (TABLE, "FedAvg")]
    lines = write_results(tmp_path, "cpu", pending=pending, order=order).read_text().splitlines()
    table = [line.split(" | ")[0:4] for line in lines if line.startswith("| ") and "Training" not in line]
    assert [cells[0].removeprefix("| ") for cells in table] == [
        "local only: STARE",
        "pooled",
        "FedAvg",
        "+ DP (epsilon 8)",
    ]
    assert table[1][3] == "1 of 3" and table[2][1] == "not run yet"


def test_a_row_that_trains_on_fewer_labels_than_the_sites_local_only_row_says_so() -> None:
    # without Mean Teacher a site trains on its labelled images only: its record counts 4 examples, 4 labelled
    record = sites(STARE={"examples": 4, "labelled": 4}, **{"AV-WIDE": {"examples": 6, "labelled": 6}})
    text = explain(record, None, {"STARE": 17, "AV-WIDE": 26})
    assert text.startswith("labelled images per site STARE 4 of 17, AV-WIDE 6 of 26 (local-only rows")


@pytest.mark.parametrize(
    ("machines", "expected"),
    [
        ([("2-core x86_64 CPU", 1326.0)], "22.1 (2-core x86_64 CPU)"),
        (
            [("2-core x86_64 CPU", 1326.0), ("NVIDIA H200", 150.0), ("NVIDIA H200", 150.0)],
            "22.1 (2-core x86_64 CPU), 2.5 (NVIDIA H200)",
        ),
        ([(None, 60.0)], "1.0"),
    ],
)
def test_a_rows_minutes_are_given_per_machine(machines: list, expected: str) -> None:
    runs = [{"machine": m, "seconds": s} if m else {"seconds": s} for m, s in machines]
    assert minutes_text(minutes_by_machine(runs)) == expected


def table_row(label: str, dice: float, ci: tuple[float, float], sd: float | None = None, seeds: int = 1) -> dict:
    return {"label": label, "dice": dice, "ci": list(ci), "dice_sd": sd, "seeds": seeds}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (table_row("pooled", 0.722, (0.682, 0.751)), "its 95 % interval (0.682–0.751) includes 0.731"),
        (
            table_row("FedAvg", 0.716, (0.704, 0.729)),
            "the gap (0.015) is within twice the seed-to-seed standard deviation measured in this table "
            "(+ HE: 0.031 over 3 seeds); this row has 1",
        ),
        (table_row("+ DP", 0.395, (0.381, 0.409)), ""),
    ],
)
def test_a_gap_to_local_only_is_called_noise_only_within_the_noise_this_table_measured(
    row: dict, expected: str
) -> None:
    rows = [
        table_row("local only: STARE", 0.731, (0.72, 0.741)),
        table_row("+ HE", 0.657, (0.61, 0.697), 0.031, 3),
        row,
    ]
    assert within_noise(row, 0.731, rows) == expected


def test_a_row_within_the_noise_is_not_called_unexplained(tmp_path: Path) -> None:
    results = [row("local only: STARE", 0.73), row("FedAvg", 0.725)]  # interval 0.715-0.735 includes 0.73
    for result in results:
        (tmp_path / f"{result['id']}.json").write_text(json.dumps(result))
    notes = [line for line in write_results(tmp_path, "cpu").read_text().splitlines() if line.startswith("- **")]
    assert notes == ["- **FedAvg** (0.725, below 0.730): its 95 % interval (0.715–0.735) includes 0.730."]
