"""Training augmentation, built on albumentations.

Appearance augmentation is the largest single lever against domain shift between
hospitals (camera, stain, illumination), so it is a first-class, configurable part of the
data layer. Random rescaling is applied by the crop sampler (it decides the window size);
everything else runs here on the crop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

# albumentations asks PyPI for a newer version when imported; a hospital's site must not call out.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402

AUGMENT_PRESETS = ("strong", "basic", "volume", "none")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation parameters. ``AugmentConfig.preset(name)`` gives the named defaults."""

    flips: bool = True
    rotate90: bool = True
    scale_min: float = 0.6
    scale_max: float = 1.6
    grey_probability: float = 0.1
    channel_scale: float = 0.25
    brightness: float = 0.2
    contrast: float = 0.3
    blur_probability: float = 0.25
    blur_sigma_max: float = 1.5
    noise_probability: float = 0.25
    noise_std_max: float = 0.06

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(
                f"scale range must satisfy 0 < scale_min <= scale_max, got ({self.scale_min}, {self.scale_max})"
            )
        for name in ("grey_probability", "blur_probability", "noise_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("channel_scale", "brightness", "contrast", "blur_sigma_max", "noise_std_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        if name == "strong":
            return cls()
        if name == "basic":
            return cls(
                scale_min=1.0,
                scale_max=1.0,
                grey_probability=0.0,
                channel_scale=0.0,
                brightness=0.1,
                contrast=0.1,
                blur_probability=0.0,
                noise_probability=0.0,
            )
        if name == "volume":
            # MRI/CT slice stacks: no 90-degree turns (anatomy has a fixed orientation after RAS+),
            # no per-channel colour changes (the channels are neighbouring slices), mild rescaling.
            return cls(
                rotate90=False,
                scale_min=0.8,
                scale_max=1.25,
                grey_probability=0.0,
                channel_scale=0.0,
                blur_probability=0.2,
                blur_sigma_max=1.0,
                noise_probability=0.2,
                noise_std_max=0.05,
            )
        if name == "none":
            return replace(cls.preset("basic"), flips=False, rotate90=False, brightness=0.0, contrast=0.0)
        raise ValueError(f"unknown augmentation preset '{name}'; choose one of {AUGMENT_PRESETS}")


def build_augmentation(config: AugmentConfig, *, channels: int) -> A.Compose:
    """The albumentations pipeline for uint8 crops with a mask."""
    steps: list[A.BasicTransform] = []
    if config.flips:
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if config.rotate90:
        steps.append(A.RandomRotate90(p=1.0))
    if channels == 3 and config.grey_probability > 0:
        steps.append(A.ToGray(num_output_channels=3, p=config.grey_probability))
    if config.channel_scale > 0:
        low, high = 1 - config.channel_scale, 1 + config.channel_scale
        steps.append(A.MultiplicativeNoise(multiplier=(low, high), per_channel=True, elementwise=False, p=0.8))
    if config.brightness > 0 or config.contrast > 0:
        steps.append(A.RandomBrightnessContrast(config.brightness, config.contrast, p=0.8))
    if config.blur_probability > 0 and config.blur_sigma_max > 0:
        steps.append(A.GaussianBlur(sigma_limit=(0.1, config.blur_sigma_max), p=config.blur_probability))
    if config.noise_probability > 0 and config.noise_std_max > 0:
        steps.append(A.GaussNoise(std_range=(0.0, config.noise_std_max), p=config.noise_probability))
    return A.Compose(steps)
