"""The privacy ledger of a run: ``RUN/privacy.jsonl``, one ``LedgerRow`` per release.

A row is written for every release through an accounted mechanism: a model update
(``kind = "update"``: DP-SGD steps), a validation score (``kind = "validation"``: one Gaussian
release at q = 1), or a refusal (``kind = "refused"``: nothing released). Each row holds the
mechanism's noise multiplier, sampling rate and number of steps, and the site's cumulative
epsilon at its delta after it, so that anyone can recompute epsilon from the log. Pooled
training writes one ``update`` row per checkpoint (and on interrupt); federated sites send
theirs with each reply and the server writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fedseg.configuration import ConfigError
from fedseg.files import read_jsonl

LEDGER_FILE = "privacy.jsonl"
KINDS = ("update", "validation", "refused")


@dataclass(frozen=True)
class LedgerRow:
    """One release of one site. ``steps``: mechanism steps of this row; ``step``: the site's DP-SGD steps so far."""

    site: str
    round: int
    kind: str
    epsilon: float
    delta: float
    epsilon_budget: float
    sampling_rate: float = 0.0
    noise_multiplier: float = 0.0
    steps: int = 0
    step: int = 0
    releases: int = 0
    unit: str = "image"
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ledger row kind must be one of {KINDS}, got '{self.kind}'")

    @property
    def budget_left(self) -> float:
        return self.epsilon_budget - self.epsilon

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "budget_left": self.budget_left}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> LedgerRow:
        """A row from JSON or a Flower record; rows of fedseg 0.1.0 (no kind) read as updates or refusals."""
        known = {f.name for f in fields(cls)}
        row = {key: value for key, value in values.items() if key in known}
        row.setdefault("kind", "refused" if values.get("refused") else "update")
        try:
            return cls(**row)
        except TypeError as error:
            raise ConfigError(f"not a privacy ledger row ({error}): {dict(values)}") from None

    def replace_origin(self, *, site: str, round: int) -> LedgerRow:
        """The same row as received by the server, under the site name and round the server knows."""
        return LedgerRow(**{**asdict(self), "site": site, "round": round})


def read_ledger(run: str | Path) -> list[LedgerRow]:
    path = Path(run) / LEDGER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no privacy ledger. Was the run trained with DP (--dp-epsilon / dp-epsilon)?")
    return [LedgerRow.from_json(line) for line in read_jsonl(path)]


def format_ledger(rows: list[LedgerRow]) -> str:
    header = (
        f"{'site':<16} {'round':>5} {'release':<10} {'sampling rate':>13} {'noise mult.':>11} {'steps':>6} "
        f"{'epsilon':>9} {'delta':>9} {'budget left':>11}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.kind == "refused":
            mechanism = f"{'budget exhausted: nothing released':>32}"
        else:
            mechanism = f"{row.sampling_rate:13.5f} {row.noise_multiplier:11.4f} {row.steps:6d}"
        lines.append(
            f"{row.site:<16} {row.round:>5} {row.kind:<10} {mechanism} {row.epsilon:9.4f} {row.delta:9.2e} "
            f"{row.budget_left:11.4f}"
        )
    units = sorted({row.unit for row in rows})
    lines.append(f"epsilon is per {' / '.join(units)} (privacy unit), at each row's delta")
    return "\n".join(lines)
