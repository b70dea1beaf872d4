"""Metric names for trackers, from the records fedseg already writes (rounds.jsonl, log.jsonl).

Federated, per round: ``heldout/dice/<centre>`` and ``heldout/all_dice`` (all held-out images),
``validation/dice/<site>`` and ``validation/all_dice``, ``privacy/epsilon/<site>``, the sites'
learning curves ``train/<metric>/<site>``, ``he/<metric>/<site>`` and ``he/aggregate_seconds``,
``he/bytes_down``, and ``round/seconds``, ``round/sites_trained``.
Pooled, per step: ``train/loss``, ``train/consistency``, ``train/lr``, ``validation/dice``,
``privacy/epsilon/pooled``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TRAIN_CURVES = ("supervised_loss", "consistency_loss", "seconds", "steps", "noise_multiplier")
HE_PER_SITE = {
    "he_bytes_up": "bytes_up",
    "he_encrypt_seconds": "encrypt_seconds",
    "he_decrypt_seconds": "decrypt_seconds",
}


def _scores(section: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}/{name}": entry.get("dice") for name, entry in section.items()}


def _site_metrics(site: str, values: Mapping[str, Any]) -> dict[str, Any]:
    metrics = {f"train/{name}/{site}": values.get(name) for name in TRAIN_CURVES}
    metrics.update({f"he/{short}/{site}": values.get(name) for name, short in HE_PER_SITE.items()})
    metrics[f"privacy/epsilon/{site}"] = values.get("epsilon")
    return metrics


def round_metrics(record: Mapping[str, Any], ledger: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A federated round's record (as in rounds.jsonl) and its ledger entries as tracker metrics."""
    metrics: dict[str, Any] = {
        "heldout/all_dice": record.get("heldout_dice"),
        "validation/all_dice": record.get("validation_dice"),
        "round/seconds": record.get("seconds"),
        "round/sites_trained": len(record.get("train", {})),
    }
    metrics.update(_scores(record.get("heldout", {}), "heldout/dice"))
    metrics.update(_scores(record.get("validation", {}), "validation/dice"))
    for site, values in record.get("train", {}).items():
        metrics.update(_site_metrics(site, values))
    for entry in ledger:  # refused sites appear only here
        metrics[f"privacy/epsilon/{entry['site']}"] = entry.get("epsilon")
    for name, value in record.get("he", {}).items():
        metrics[f"he/{name}"] = value
    return metrics


def step_metrics(record: Mapping[str, Any]) -> dict[str, Any]:
    """A pooled run's log row (loss, consistency, lr) as tracker metrics."""
    return {f"train/{name}": record.get(name) for name in ("loss", "consistency", "lr")}
