"""Aggregation at the server: weighted FedAvg of model weights, exact merging of metric sums and counts."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedseg.metrics import SegmentationCounts


def weighted_average(updates: Sequence[tuple[Mapping[str, torch.Tensor], float]]) -> OrderedDict[str, torch.Tensor]:
    """``sum_k w_k x_k / sum_k w_k`` per tensor, accumulated in float64 (FedAvg weighted by examples).

    Integer tensors (counters) are not averaged: every update must agree on them.
    """
    if not updates:
        raise ValueError("nothing to aggregate: no updates")
    total = float(sum(weight for _, weight in updates))
    if total <= 0:
        raise ValueError(f"aggregation weights must sum to > 0, got {total}")
    names = list(updates[0][0])
    for weights, _ in updates[1:]:
        if list(weights) != names:
            raise ValueError("updates have different parameter names: the sites run different models")
    result: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name in names:
        first = updates[0][0][name]
        if not first.dtype.is_floating_point:
            if any(not torch.equal(w[name], first) for w, _ in updates[1:]):
                raise ValueError(f"integer tensor '{name}' differs between updates")
            result[name] = first.clone()
            continue
        accumulator = np.zeros(tuple(first.shape), dtype=np.float64)
        for weights, weight in updates:
            accumulator += (weight / total) * weights[name].detach().cpu().numpy().astype(np.float64)
        result[name] = torch.from_numpy(accumulator.astype(first.detach().cpu().numpy().dtype))
    return result


def weighted_metrics(entries: Sequence[tuple[Mapping[str, Any], float]], keys: Sequence[str]) -> dict[str, float]:
    """Example-weighted means of numeric training metrics (keys missing from an entry are skipped)."""
    means: dict[str, float] = {}
    for key in keys:
        pairs = [(float(m[key]), w) for m, w in entries if key in m and m[key] is not None]
        if pairs:
            means[key] = sum(v * w for v, w in pairs) / sum(w for _, w in pairs)
    return means


def merge_counts(results: Sequence[Mapping[str, Any]], *, by: str = "centre") -> dict[str, SegmentationCounts]:
    """Sum the evaluation counts of several sites, grouped by centre (or by any key of the results)."""
    merged: dict[str, SegmentationCounts] = {}
    for result in results:
        counts = SegmentationCounts.from_dict(result["counts"])
        key = str(result[by])
        merged[key] = merged[key].merge(counts) if key in merged else counts
    return merged
