from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedseg.metrics import SegmentationCounts, hd95, score_image


def test_hand_computed_scores() -> None:
    truth = np.zeros((4, 5), bool)
    truth[0, :4] = True  # 4 pixels
    prediction = np.zeros((4, 5), bool)
    prediction[0, 1:] = True  # 4 pixels, 3 overlap
    scores = score_image(prediction, truth)
    assert (scores.tp, scores.fp, scores.fn, scores.tn) == (3, 1, 1, 15)
    assert scores.dice == pytest.approx(6 / 8)
    assert scores.iou == pytest.approx(3 / 5)
    assert scores.sensitivity == pytest.approx(3 / 4) and scores.precision == pytest.approx(3 / 4)


def test_hd95_of_a_shifted_square_is_the_shift() -> None:
    a = np.zeros((64, 64), bool)
    a[10:30, 10:30] = True
    b = np.roll(a, 4, axis=1)
    assert hd95(a, b) == pytest.approx(4.0)
    assert hd95(a, np.zeros_like(a)) is None


def test_empty_conventions() -> None:
    empty = np.zeros((3, 3), bool)
    scores = score_image(empty, empty)
    assert scores.dice == 1.0 and scores.iou == 1.0
    assert scores.sensitivity is None and scores.precision is None and scores.hd95 is None
    missed = score_image(empty, ~empty)
    assert missed.dice == 0.0 and missed.sensitivity == 0.0 and missed.precision is None


def test_field_of_view_excludes_outside_pixels() -> None:
    truth = np.ones((2, 2), bool)
    prediction = np.array([[True, False], [True, True]])
    fov = np.array([[True, False], [True, False]])
    scores = score_image(prediction, truth, fov=fov)
    assert (scores.tp, scores.fp, scores.fn, scores.tn) == (2, 0, 0, 0)


masks = st.integers(0, 2**16 - 1).map(lambda bits: np.array([(bits >> i) & 1 for i in range(16)], bool).reshape(4, 4))


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(masks, masks), min_size=2, max_size=8), cut=st.integers(1, 7))
def test_sites_combine_exactly(pairs: list, cut: int) -> None:
    cut = min(cut, len(pairs) - 1)
    whole, left, right = SegmentationCounts(), SegmentationCounts(), SegmentationCounts()
    for i, (p, t) in enumerate(pairs):
        scores = score_image(p, t, with_hd95=False)
        whole.add(scores)
        (left if i < cut else right).add(scores)
    merged = left.merge(right)
    for key, value in whole.summary().items():
        other = merged.summary()[key]
        assert (value is None and other is None) or value == pytest.approx(other, abs=1e-12)
    assert SegmentationCounts.from_dict(merged.to_dict()) == merged
