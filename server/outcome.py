"""What a round produced, typed: the training outcome, the evaluation, and the line for rounds.jsonl.

``RoundOutcome.record()`` is the one place that turns a round into the JSON line of
``rounds.jsonl``; ``RoundOutcome.ledger`` holds the privacy ledger rows the server appends to
``privacy.jsonl`` (``privacy_row`` is the one place that builds a row from a site's reply).
Training metrics are kept as the numbers each site sent, whatever their names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedseg.metrics import SegmentationCounts
from sites.records import Model


@dataclass(frozen=True)
class LedgerEntry:
    """One row of privacy.jsonl: what a site spent (or that it refused to train) in a round."""

    site: str
    round: int
    values: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "round": self.round, **self.values}


def privacy_row(
    site: str, server_round: int, metrics: Mapping[str, float], *, refused: bool, budget: float
) -> LedgerEntry | None:
    """The ledger row for a site's train reply (None when the site trains without DP)."""
    if "epsilon" not in metrics:
        return None
    budget = float(metrics.get("epsilon_budget", budget))
    if refused:
        values = {
            "refused": True,
            "epsilon": metrics["epsilon"],
            "delta": metrics.get("delta"),
            "epsilon_budget": budget,
        }
    else:
        values = {
            "sampling_rate": metrics.get("sample_rate"),
            "noise_multiplier": metrics.get("noise_multiplier"),
            "steps": int(metrics.get("steps", 0)),
            "epsilon": metrics["epsilon"],
            "delta": metrics.get("delta"),
            "epsilon_budget": budget,
        }
    return LedgerEntry(site, server_round, {**values, "budget_left": budget - float(metrics["epsilon"])})


@dataclass(frozen=True)
class AggregationStats:
    """How encrypted aggregation went: its mode, seconds at the server, bytes sent back, sites unmasked."""

    mode: str
    aggregate_seconds: float
    bytes_down: int
    unmasked_dropouts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "aggregate_seconds": self.aggregate_seconds,
            "bytes_down": self.bytes_down,
            "unmasked_dropouts": list(self.unmasked_dropouts),
        }


@dataclass(frozen=True)
class TrainOutcome:
    """``aggregate_train``'s result: the new global model (None if too few usable updates) and why."""

    model: Model | None
    train: Mapping[str, Mapping[str, float]]
    left_out: Mapping[str, str]
    ledger: tuple[LedgerEntry, ...] = ()
    stats: AggregationStats | None = None


@dataclass(frozen=True)
class EvaluationOutcome:
    """``aggregate_evaluate``'s result: held-out scores by centre, validation scores by training site."""

    heldout: Mapping[str, SegmentationCounts]
    validation: Mapping[str, SegmentationCounts]
    failed: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "heldout": {c: {**k.summary(), "counts": k.to_dict()} for c, k in self.heldout.items()},
            "validation": {s: k.summary() for s, k in self.validation.items()},
            "heldout_dice": pooled_dice(self.heldout.values()),
            "validation_dice": pooled_dice(self.validation.values()),
        }


def pooled_dice(counts: Iterable[SegmentationCounts]) -> float | None:
    total = SegmentationCounts()
    for item in counts:
        total = total.merge(item)
    value = total.summary()["dice"]
    return float(value) if value is not None else None


@dataclass(frozen=True)
class RoundOutcome:
    round: int
    training: TrainOutcome
    evaluation: EvaluationOutcome | None
    seconds: float

    @property
    def left_out(self) -> dict[str, str]:
        return {**self.training.left_out, **(self.evaluation.failed if self.evaluation else {})}

    @property
    def validation_dice(self) -> float | None:
        return pooled_dice(self.evaluation.validation.values()) if self.evaluation else None

    def record(self) -> dict[str, Any]:
        """The line of rounds.jsonl."""
        line: dict[str, Any] = {
            "round": self.round,
            "train": {site: dict(metrics) for site, metrics in self.training.train.items()},
            "left_out": self.left_out,
        }
        if self.training.stats is not None:
            line["he"] = self.training.stats.to_json()
        if self.evaluation is not None:
            line.update(self.evaluation.to_json())
        line["seconds"] = self.seconds
        return line

    def summary_line(self, rounds: int) -> str:
        line = self.record()
        parts = [
            f"held-out {c} Dice {v['dice']:.4f}"
            for c, v in line.get("heldout", {}).items()
            if v.get("dice") is not None
        ]
        if line.get("validation_dice") is not None:
            parts.append(f"validation Dice {line['validation_dice']:.4f}")
        epsilons = [m["epsilon"] for m in self.training.train.values() if "epsilon" in m]
        if epsilons:
            parts.append(f"epsilon <= {max(epsilons):.3f}")
        if self.training.stats is not None:
            parts.append(f"encrypted sum in {self.training.stats.aggregate_seconds:.1f} s")
        parts.append(f"{len(self.training.train)} site(s) trained, {self.seconds:.0f} s")
        return f"round {self.round}/{rounds}: " + "; ".join(parts)
