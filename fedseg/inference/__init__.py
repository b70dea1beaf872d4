"""Whole-image inference."""

from fedseg.inference.sliding_window import TilingConfig, predict_probabilities

__all__ = ["TilingConfig", "predict_probabilities"]
