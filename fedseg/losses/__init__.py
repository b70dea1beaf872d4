"""Losses on logits ``B,C,H,W`` (or ``B,C,X,Y,Z``) with MONAI's ``reduction`` (``none`` gives one value per sample)."""

from fedseg.losses.consistency import ConsistencyLoss
from fedseg.losses.dice import DiceLoss
from fedseg.losses.focal import FocalLoss
from fedseg.losses.focal_dice import FocalDiceLoss, LossConfig

__all__ = ["ConsistencyLoss", "DiceLoss", "FocalDiceLoss", "FocalLoss", "LossConfig"]
