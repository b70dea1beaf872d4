"""Whole-image inference: sliding windows, test-time augmentation, dense CRF."""

from fedseg.inference.crf import CRFConfig, CRFPool, refine
from fedseg.inference.predictor import InferenceConfig, Predictor
from fedseg.inference.sliding_window import TilingConfig, predict_probabilities

__all__ = ["CRFConfig", "CRFPool", "InferenceConfig", "Predictor", "TilingConfig", "predict_probabilities", "refine"]
