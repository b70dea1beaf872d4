"""Metrics as sums and counts (``SegmentationCounts``) so that sites combine exactly."""

from fedseg.metrics.bootstrap import bootstrap_ci
from fedseg.metrics.segmentation import ImageScores, SegmentationCounts, hd95, score_image

__all__ = ["ImageScores", "SegmentationCounts", "bootstrap_ci", "hd95", "score_image"]
