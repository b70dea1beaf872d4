"""Metrics as sums and counts (``SegmentationCounts``) so that sites combine exactly."""

from fedseg.metrics.segmentation import ImageScores, SegmentationCounts, hd95, score_image

__all__ = ["ImageScores", "SegmentationCounts", "hd95", "score_image"]
