from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from fedseg.federation.aggregation import merge_counts, weighted_average, weighted_metrics
from fedseg.metrics import SegmentationCounts


def test_fedavg_weights_by_examples_exactly() -> None:
    updates = [
        (OrderedDict(w=torch.tensor([1.0, 10.0]), b=torch.tensor([3.0])), 1.0),
        (OrderedDict(w=torch.tensor([4.0, 20.0]), b=torch.tensor([6.0])), 2.0),
        (OrderedDict(w=torch.tensor([8.0, 40.0]), b=torch.tensor([-1.0])), 5.0),
    ]
    result = weighted_average(updates)
    assert result["w"].tolist() == [(1 * 1 + 2 * 4 + 5 * 8) / 8, (1 * 10 + 2 * 20 + 5 * 40) / 8]
    assert result["b"].tolist() == [(3 + 12 - 5) / 8]
    assert result["w"].dtype == torch.float32


def test_equal_weights_give_the_plain_mean_and_bad_inputs_are_refused() -> None:
    a, b = OrderedDict(x=torch.zeros(3)), OrderedDict(x=torch.full((3,), 2.0))
    assert weighted_average([(a, 7.0), (b, 7.0)])["x"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="nothing to aggregate"):
        weighted_average([])
    with pytest.raises(ValueError, match="different parameter names"):
        weighted_average([(a, 1.0), (OrderedDict(y=torch.zeros(3)), 1.0)])
    with pytest.raises(ValueError, match="sum to > 0"):
        weighted_average([(a, 0.0)])


def test_metric_means_and_count_merging() -> None:
    means = weighted_metrics([({"loss": 1.0, "epsilon": 2.0}, 1.0), ({"loss": 4.0}, 3.0)], ["loss", "epsilon"])
    assert means == {"loss": 3.25, "epsilon": 2.0}
    one = SegmentationCounts(n_images=2, dice_sum=1.5, tp=10)
    two = SegmentationCounts(n_images=1, dice_sum=0.5, tp=5)
    merged = merge_counts(
        [
            {"centre": "A", "counts": one.to_dict()},
            {"centre": "A", "counts": two.to_dict()},
            {"centre": "B", "counts": two.to_dict()},
        ]
    )
    assert merged["A"] == one.merge(two) and merged["B"] == two
    assert merged["A"].summary()["dice"] == pytest.approx(2.0 / 3)
