"""Distances between volumes in millimetres from the voxel spacing, and the volume difference."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.metrics import SegmentationCounts, score_image


def test_distances_follow_the_spacing_of_thick_slices() -> None:
    truth = np.zeros((20, 20, 12), bool)
    truth[5:15, 5:15, 2:8] = True
    shifted = np.roll(truth, 2, axis=2)  # two slices further: 6 mm at 3 mm slices
    scores = score_image(shifted, truth, spacing=(0.5, 0.5, 3.0))
    assert scores.hd95 == pytest.approx(6.0)
    assert 0 < scores.msd < 6.0
    assert scores.volume_difference == pytest.approx(0.0)
    grown = truth.copy()
    grown[5:15, 5:15, 8] = True
    assert score_image(grown, truth, spacing=(0.5, 0.5, 3.0)).volume_difference == pytest.approx(1 / 6)
    in_voxels = score_image(shifted, truth)
    assert in_voxels.hd95 == pytest.approx(2.0) and in_voxels.msd is None and in_voxels.volume_difference is None


def test_counts_average_surface_distance_and_volume_difference() -> None:
    truth = np.zeros((10, 10, 6), bool)
    truth[2:8, 2:8, 1:5] = True
    counts = SegmentationCounts()
    counts.add(score_image(truth, truth, spacing=(1.0, 1.0, 2.0)))
    counts.add(score_image(np.zeros_like(truth), truth, spacing=(1.0, 1.0, 2.0)))
    summary = counts.summary()
    assert summary["msd"] == pytest.approx(0.0) and summary["volume_difference"] == pytest.approx(-0.5)
    assert SegmentationCounts.from_dict(counts.to_dict()) == counts
