"""What a round produced, typed: the training outcome, the evaluation, and the line for rounds.jsonl.

``RoundOutcome.record()`` is the one place that turns a round into the JSON line of
``rounds.jsonl``; ``RoundOutcome.ledger`` holds the privacy ledger rows (``fedseg.privacy.ledger.LedgerRow``,
the one row type) that the server appends to ``privacy.jsonl``: the rows the sites sent with their train
and evaluate replies (``received_row``), which the server never computes itself.
Training metrics are kept as the numbers each site sent, whatever their names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedseg.metrics import SegmentationCounts
from fedseg.privacy.ledger import LedgerRow
from sites.records import Model


def received_row(record: Mapping[str, Any] | None, site: str, server_round: int) -> LedgerRow | None:
    """The ledger row a site sent with a reply (its ``ledger`` record; None without DP), under the site
    name and round the server knows: a site cannot write rows for another site or round."""
    if record is None:
        return None
    return LedgerRow.from_json(record).replace_origin(site=site, round=server_round)


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
    ledger: tuple[LedgerRow, ...] = ()
    stats: AggregationStats | None = None


@dataclass(frozen=True)
class EvaluationOutcome:
    """``aggregate_evaluate``'s result: held-out scores by centre, validation scores by training site (noised
    under DP), and the ledger rows of the released validation scores."""

    heldout: Mapping[str, SegmentationCounts]
    validation: Mapping[str, SegmentationCounts]
    failed: Mapping[str, str] = field(default_factory=dict)
    ledger: tuple[LedgerRow, ...] = ()

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
    def ledger(self) -> tuple[LedgerRow, ...]:
        """The round's privacy ledger rows: updates (and refusals), then validation releases."""
        return self.training.ledger + (self.evaluation.ledger if self.evaluation else ())

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
