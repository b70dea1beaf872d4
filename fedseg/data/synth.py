"""Synthetic multi-centre data: vessel-like trees and blobs with exact masks.

Every centre draws its images with its own appearance (colour cast, contrast, gamma,
blur, noise, illumination, field of view) and slightly different anatomy (vessel width and
density), so that a centre held out of training is a real domain shift. The output uses
the dataset layout of :mod:`fedseg.data.layout`.

``style="varied"`` draws every folder's look from much wider ranges instead (any hue or grey,
faint to strong contrast, clean to noisy, thin to thick vessels, small to large blobs): the
images of the public prior (:mod:`fedseg.training.prior`), which must not be tied to one look.
``kind`` keeps vessel trees, blobs or both.
"""

from __future__ import annotations

import colorsys
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from fedseg.files import atomic_write_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CentreAppearance:
    """How one synthetic centre's scanner and population look."""

    name: str
    background_rgb: tuple[float, float, float]
    structure_rgb: tuple[float, float, float]
    contrast: float
    gamma: float
    blur_sigma: float
    noise_std: float
    illumination: float
    texture: float
    fov_radius: float | None
    vessel_width: float
    branching: float
    blobs: tuple[int, int]
    distractors: int
    vessels: bool = True
    blob_scale: float = 1.0


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r, 4), round(g, 4), round(b, 4))


def centre_appearance(index: int, n_centres: int, seed: int) -> CentreAppearance:
    """Appearance of centre ``index``: hues spread around the colour wheel, the rest drawn per centre."""
    rng = np.random.default_rng([seed, 7919, index])
    hue = index / max(n_centres, 1) + rng.uniform(-0.05, 0.05)
    return CentreAppearance(
        name=f"centre-{index + 1:02d}",
        background_rgb=_hsv(hue, rng.uniform(0.35, 0.75), rng.uniform(0.55, 0.85)),
        structure_rgb=_hsv(hue + rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.6), 1.0),
        contrast=round(rng.uniform(0.3, 0.65), 3),
        gamma=round(math.exp(rng.uniform(-0.35, 0.35)), 3),
        blur_sigma=round(rng.uniform(0.0, 1.4), 3),
        noise_std=round(rng.uniform(0.01, 0.06), 4),
        illumination=round(rng.uniform(0.0, 0.45), 3),
        texture=round(rng.uniform(0.05, 0.25), 3),
        fov_radius=round(rng.uniform(0.86, 0.98), 3) if index % 2 == 0 else None,
        vessel_width=round(rng.uniform(0.75, 1.35), 3),
        branching=round(rng.uniform(0.06, 0.12), 3),
        blobs=(0, int(rng.integers(2, 4))),
        distractors=int(rng.integers(2, 8)),
    )


def varied_appearance(index: int, seed: int) -> CentreAppearance:
    """A look drawn from wide ranges, so that a model trained on many of them learns shapes, not one style."""
    rng = np.random.default_rng([seed, 104729, index])
    hue = rng.uniform(0, 1)
    grey = bool(rng.random() < 0.25)
    return CentreAppearance(
        name=f"style-{index + 1:03d}",
        background_rgb=_hsv(hue, 0.0 if grey else rng.uniform(0.2, 0.9), rng.uniform(0.35, 0.9)),
        structure_rgb=_hsv(hue + rng.uniform(0.2, 0.8), 0.0 if grey else rng.uniform(0.1, 0.7), 1.0),
        contrast=round(rng.uniform(0.15, 0.8), 3),
        gamma=round(math.exp(rng.uniform(-0.5, 0.5)), 3),
        blur_sigma=round(rng.uniform(0.0, 2.0), 3),
        noise_std=round(rng.uniform(0.005, 0.1), 4),
        illumination=round(rng.uniform(0.0, 0.7), 3),
        texture=round(rng.uniform(0.02, 0.35), 3),
        fov_radius=round(rng.uniform(0.8, 1.0), 3) if rng.random() < 0.5 else None,
        vessel_width=round(rng.uniform(0.5, 2.2), 3),
        branching=round(rng.uniform(0.04, 0.15), 3),
        blobs=(0, 3),
        distractors=int(rng.integers(0, 10)),
        blob_scale=round(rng.uniform(0.5, 2.0), 3),
    )


def with_kind(appearance: CentreAppearance, kind: str) -> CentreAppearance:
    """The appearance drawing only vessel trees, only blobs (1 to 4 an image), or both (unchanged)."""
    if kind == "vessels":
        return replace(appearance, blobs=(0, 0))
    if kind == "blobs":
        return replace(appearance, vessels=False, blobs=(1, max(4, appearance.blobs[1])))
    return appearance


def _smooth_noise(size: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def draw_vessel_tree(mask: np.ndarray, rng: np.random.Generator, appearance: CentreAppearance) -> None:
    """Grow branching random-walk vessels from an optic-disc-like root into ``mask`` (uint8, in place)."""
    size = mask.shape[0]
    unit = size / 512.0
    root = rng.uniform(0.3, 0.7, size=2) * size
    stack = [
        (root[0], root[1], rng.uniform(0, 2 * math.pi), rng.uniform(3.5, 5.5) * unit * appearance.vessel_width, 0)
        for _ in range(int(rng.integers(3, 6)))
    ]
    segments = 0
    while stack and segments < 4000:
        x, y, angle, width, depth = stack.pop()
        for _ in range(int(rng.integers(20, 60))):
            step = rng.uniform(5, 11) * unit
            angle += rng.normal(0, 0.22)
            nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
            thickness = max(1, int(round(width)))
            cv2.line(mask, (int(round(x)), int(round(y))), (int(round(nx)), int(round(ny))), 1, thickness, cv2.LINE_8)
            segments += 1
            x, y = nx, ny
            if not (-0.05 * size < x < 1.05 * size and -0.05 * size < y < 1.05 * size):
                break
            width *= rng.uniform(0.975, 0.998)
            if depth < 6 and rng.random() < appearance.branching:
                side = rng.choice((-1.0, 1.0))
                stack.append((x, y, angle + side * rng.uniform(0.4, 1.1), width * rng.uniform(0.55, 0.8), depth + 1))
            if width < 0.8 * unit:
                break


def draw_blobs(mask: np.ndarray, rng: np.random.Generator, count: int, scale: float = 1.0) -> None:
    """Filled ellipses (polyp- or lesion-like) into ``mask`` (uint8, in place); ``scale`` multiplies their axes."""
    size = mask.shape[0]
    for _ in range(count):
        centre = (int(rng.uniform(0.15, 0.85) * size), int(rng.uniform(0.15, 0.85) * size))
        axes = (int(rng.uniform(0.03, 0.1) * scale * size), int(rng.uniform(0.03, 0.1) * scale * size))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1, cv2.LINE_8)


def field_of_view(size: int, radius: float | None) -> np.ndarray:
    if radius is None:
        return np.ones((size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    half = (size - 1) / 2
    return (xx - half) ** 2 + (yy - half) ** 2 <= (radius * size / 2) ** 2


def render(
    vessels: np.ndarray, blobs: np.ndarray, fov: np.ndarray, rng: np.random.Generator, appearance: CentreAppearance
) -> np.ndarray:
    """The uint8 RGB image of the structures as this centre's scanner would show them."""
    size = vessels.shape[0]
    texture = 1 + appearance.texture * (0.6 * _smooth_noise(size, rng, 6) + 0.4 * _smooth_noise(size, rng, 24))
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    light = 1 + appearance.illumination * (math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]) / 2
    image = np.asarray(appearance.background_rgb, np.float32) * (texture * light)[..., None]
    profile = cv2.GaussianBlur(vessels.astype(np.float32), (0, 0), 0.6)
    structure = np.asarray(appearance.structure_rgb, np.float32)
    image *= 1 - appearance.contrast * profile[..., None] * structure
    blob_profile = cv2.GaussianBlur(blobs.astype(np.float32), (0, 0), 1.5)
    blob_texture = 1 + 0.15 * _smooth_noise(size, rng, 32)
    image *= 1 + (0.25 + 0.5 * appearance.contrast) * (blob_profile * blob_texture)[..., None]
    for _ in range(appearance.distractors):
        centre = (int(rng.integers(size)), int(rng.integers(size)))
        spot = np.zeros((size, size), np.float32)
        cv2.circle(spot, centre, int(rng.uniform(0.006, 0.02) * size) + 1, 1.0, -1)
        image += 0.35 * cv2.GaussianBlur(spot, (0, 0), 2.0)[..., None]
    shown: np.ndarray = np.clip(image, 0, 1) ** appearance.gamma
    if appearance.blur_sigma > 0.05:
        shown = cv2.GaussianBlur(shown, (0, 0), appearance.blur_sigma)
    noisy = shown + rng.normal(0, appearance.noise_std, shown.shape)
    noisy[~fov] = 0
    return (np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8)


def synth_image(
    size: int, rng: np.random.Generator, appearance: CentreAppearance
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image (uint8 RGB), its exact mask (bool) and its field of view (bool)."""
    vessels = np.zeros((size, size), np.uint8)
    if appearance.vessels:
        draw_vessel_tree(vessels, rng, appearance)
    blobs = np.zeros((size, size), np.uint8)
    draw_blobs(blobs, rng, int(rng.integers(appearance.blobs[0], appearance.blobs[1] + 1)), appearance.blob_scale)
    fov = field_of_view(size, appearance.fov_radius)
    image = render(vessels, blobs, fov, rng, appearance)
    mask = ((vessels > 0) | (blobs > 0)) & fov
    return image, mask, fov


KINDS = ("both", "vessels", "blobs")
STYLES = ("centres", "varied")


@dataclass(frozen=True)
class SynthConfig:
    """``centres`` folders of ``images`` images; ``style``: one look per centre, or widely varied looks."""

    out: Path
    centres: int = 4
    images: int = 20
    size: int = 512
    seed: int = 0
    unlabelled_fraction: float = 0.0
    kind: str = "both"
    style: str = "centres"

    def __post_init__(self) -> None:
        if self.centres < 1:
            raise ValueError(f"--centres must be >= 1, got {self.centres}")
        if self.images < 1:
            raise ValueError(f"--images must be >= 1, got {self.images}")
        if self.size < 32:
            raise ValueError(f"--size must be >= 32, got {self.size}")
        if not 0.0 <= self.unlabelled_fraction < 1.0:
            raise ValueError(f"--unlabelled-fraction must be in [0, 1), got {self.unlabelled_fraction}")
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if self.style not in STYLES:
            raise ValueError(f"--style must be one of {', '.join(STYLES)}, got '{self.style}'")

    def appearance(self, index: int) -> CentreAppearance:
        """The look of folder ``index``."""
        if self.style == "varied":
            return with_kind(varied_appearance(index, self.seed), self.kind)
        return with_kind(centre_appearance(index, self.centres, self.seed), self.kind)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=False, compress_level=1)


def generate(config: SynthConfig, *, progress: bool = True) -> list[CentreAppearance]:
    """Write ``config.centres`` centres of ``config.images`` images each under ``config.out``."""
    appearances = [config.appearance(i) for i in range(config.centres)]
    jobs = [(a, i) for a in appearances for i in range(config.images)]
    n_unlabelled = round(config.unlabelled_fraction * config.images)
    for appearance, index in tqdm(jobs, desc="synth", unit="img", disable=None if progress else True):
        rng = np.random.default_rng([config.seed, appearances.index(appearance), index])
        image, mask, fov = synth_image(config.size, rng, appearance)
        folder = Path(config.out) / appearance.name
        stem = f"img-{index:04d}"
        _save_png(image, folder / "images" / f"{stem}.png")
        if index >= n_unlabelled:
            _save_png(mask.astype(np.uint8) * 255, folder / "masks" / f"{stem}.png")
        if appearance.fov_radius is not None:
            _save_png(fov.astype(np.uint8) * 255, folder / "fov" / f"{stem}.png")
    atomic_write_json(
        Path(config.out) / "synth.json",
        {
            "generator": "fedseg.data.synth",
            "config": {**asdict(config), "out": str(config.out)},
            "centres": [asdict(a) for a in appearances],
        },
    )
    return appearances
