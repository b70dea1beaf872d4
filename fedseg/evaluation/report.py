"""Human-readable evaluation outputs: ``report.md``, a Dice bar chart, and example overlays."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from fedseg.files import atomic_write_bytes, atomic_write_text
from fedseg.plotting import plt, save_figure

TRUE_POSITIVE = (40, 200, 60)
FALSE_POSITIVE = (255, 0, 200)
FALSE_NEGATIVE = (0, 170, 255)
TRUTH = (255, 220, 0)
PANEL_HEIGHT = 480


def _blend(image: np.ndarray, where: np.ndarray, colour: tuple[int, int, int], alpha: float) -> np.ndarray:
    out = image.astype(np.float32)
    out[where] = (1 - alpha) * out[where] + alpha * np.asarray(colour, np.float32)
    return out.astype(np.uint8)


def overlay_strip(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Three panels side by side: the image, the expert's mask, and the model's errors."""
    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    dimmed = (0.55 * rgb).astype(np.uint8)
    expert = _blend(dimmed, truth, TRUTH, 0.85)
    errors = _blend(dimmed, truth & prediction, TRUE_POSITIVE, 0.9)
    errors = _blend(errors, prediction & ~truth, FALSE_POSITIVE, 0.9)
    errors = _blend(errors, truth & ~prediction, FALSE_NEGATIVE, 0.9)
    strip = np.concatenate([rgb, expert, errors], axis=1)
    scale = PANEL_HEIGHT / strip.shape[0]
    size = (max(1, round(strip.shape[1] * scale)), PANEL_HEIGHT)
    return np.asarray(Image.fromarray(strip).resize(size, Image.Resampling.LANCZOS))


def save_overlay(path: Path, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, title: str) -> Path:
    picture = Image.fromarray(overlay_strip(image, truth, prediction))
    ImageDraw.Draw(picture).text((8, 8), title, fill=(255, 255, 255))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def dice_bar_chart(path: Path, centres: Mapping[str, Mapping[str, Any]]) -> Path:
    """Mean Dice per centre with its 95 % interval (and without CRF when a CRF ran)."""
    names = list(centres)
    with_crf = any("without_crf" in m for m in centres.values())
    series = [("without CRF", "without_crf"), ("with CRF", None)] if with_crf else [("Dice", None)]
    figure, axis = plt.subplots(figsize=(max(4.0, 1.3 * len(names) + 2), 3.6), dpi=120)
    width = 0.8 / len(series)
    for k, (label, key) in enumerate(series):
        values = [(centres[n][key] if key else centres[n]) for n in names]
        means = [v["dice"] or 0.0 for v in values]
        errors = np.array(
            [[m - (v["dice_ci95"] or [m, m])[0], (v["dice_ci95"] or [m, m])[1] - m] for m, v in zip(means, values)]
        ).T
        positions = np.arange(len(names)) + (k - (len(series) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=errors, capsize=4, label=label)
    axis.set_xticks(np.arange(len(names)), names)
    axis.set_ylim(0, 1)
    axis.set_ylabel("Dice (mean over images, 95 % CI)")
    axis.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        axis.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(figure, path)


def _cell(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _dice_cell(entry: Mapping[str, Any]) -> str:
    ci = entry.get("dice_ci95")
    interval = f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
    return f"{_cell(entry['dice'])}{interval}"


def _volume_cells(m: Mapping[str, Any]) -> str:
    difference = m.get("volume_difference")
    return f" {_cell(m.get('msd'), 2)} | {'–' if difference is None else f'{100 * difference:+.1f} %'} |"


def report_markdown(metrics: Mapping[str, Any], examples: Sequence[tuple[str, str, str, float]]) -> str:
    settings = metrics["settings"]
    with_crf = settings["crf"] is not None
    unit = settings.get("distance_unit", "px")
    volumes = unit == "mm"
    lines = [
        "# Segmentation report",
        "",
        f"Checkpoint `{metrics['checkpoint']}`: model `{metrics['model']['name']}`.",
        f"Threshold {settings['threshold']} ({settings['threshold_source']}); "
        f"test-time augmentation {'on' if settings['tta'] else 'off'}; dense CRF {'on' if with_crf else 'off'}; "
        f"tiles of {settings['tile_size']} px with {settings['overlap']:.0%} overlap.",
        "",
        f"| Centre | {'Volumes' if volumes else 'Images'} | Dice (95 % CI) | IoU | Sensitivity | Precision "
        f"| HD95 ({unit}) |"
        + (" Mean surface distance (mm) | Volume difference |" if volumes else "")
        + (" Dice without CRF |" if with_crf else ""),
        "|---|---:|---|---:|---:|---:|---:|" + ("---:|---:|" if volumes else "") + ("---|" if with_crf else ""),
    ]
    for centre, m in metrics["centres"].items():
        row = (
            f"| {centre} | {m['n_images']} | {_dice_cell(m)} | {_cell(m['iou'])} | {_cell(m['sensitivity'])} "
            f"| {_cell(m['precision'])} | {_cell(m['hd95'], 1)} |"
        )
        row += _volume_cells(m) if volumes else ""
        lines.append(row + (f" {_dice_cell(m['without_crf'])} |" if with_crf else ""))
    lines += [
        "",
        "How to read this: Dice and IoU measure how far the model's outline overlaps the expert's (1 is identical, "
        "0 is no overlap). Sensitivity is the share of the expert's foreground the model found; precision the share "
        "of the model's foreground that is right. HD95 is the boundary distance, in "
        + ("millimetres (from each volume's voxel spacing)" if volumes else "pixels")
        + ", that 95 % of boundary points stay within (lower is better). "
        + (
            "The mean surface distance averages the boundary distance both ways; the volume difference is "
            "(predicted - expert) / expert volume. Dice and distances are per volume; intervals are bootstrapped "
            "over volumes."
            if volumes
            else "Intervals are bootstrapped over images."
        ),
        "",
        "![Dice by centre](dice_by_centre.png)",
        "",
        "## Examples",
        "",
        (
            "Best, median and worst volume of each centre by Dice, a few slices each, cropped around the expert's mask "
            "(radiological view). "
            if volumes
            else "Best, median and worst image of each centre by Dice. "
        )
        + "Panels: the image; the expert's mask (yellow); "
        "the model's result (green: agrees with the expert; magenta: marked but not the expert's; "
        "blue: the expert's but missed).",
        "",
    ]
    for centre, rank, file_name, dice in examples:
        lines += [f"**{centre}, {rank}** (Dice {dice:.3f})", "", f"![{centre} {rank}](overlays/{file_name})", ""]
    return "\n".join(lines)


def write_report(out: Path, metrics: Mapping[str, Any], examples: Sequence[tuple[str, str, str, float]]) -> Path:
    dice_bar_chart(out / "dice_by_centre.png", metrics["centres"])
    return atomic_write_text(out / "report.md", report_markdown(metrics, examples))
