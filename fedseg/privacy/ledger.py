"""The privacy ledger of a run: ``RUN/privacy.jsonl``, one line per site and round.

Each line holds the round's sampling rate, noise multiplier and number of steps, and the
site's cumulative epsilon at its delta, so that anyone can recompute epsilon from the log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedseg.files import read_jsonl

LEDGER_FILE = "privacy.jsonl"


def read_ledger(run: str | Path) -> list[dict[str, Any]]:
    path = Path(run) / LEDGER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no privacy ledger. Was the run trained with DP (--dp-epsilon / dp-epsilon)?")
    return read_jsonl(path)


def format_ledger(entries: list[dict[str, Any]]) -> str:
    header = (
        f"{'site':<16} {'round':>5} {'sampling rate':>13} {'noise mult.':>11} {'steps':>6} "
        f"{'epsilon':>9} {'delta':>9} {'budget left':>11}"
    )
    lines = [header, "-" * len(header)]
    for entry in entries:
        if entry.get("refused"):
            lines.append(
                f"{entry['site']:<16} {entry['round']:>5} {'refused: budget exhausted':>41} "
                f"{entry['epsilon']:9.4f} {entry['delta']:9.2e} {entry['budget_left']:11.4f}"
            )
            continue
        lines.append(
            f"{entry['site']:<16} {entry['round']:>5} {entry['sampling_rate']:13.5f} "
            f"{entry['noise_multiplier']:11.4f} {entry['steps']:6d} {entry['epsilon']:9.4f} "
            f"{entry['delta']:9.2e} {entry['budget_left']:11.4f}"
        )
    return "\n".join(lines)
