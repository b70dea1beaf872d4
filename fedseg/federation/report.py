"""The federated run's summary: ``summary.md`` and a learning curve (held-out Dice and epsilon per round)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedseg.files import atomic_write_text
from fedseg.plotting import plt, save_figure


def _series(rounds: Sequence[dict[str, Any]], section: str) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for record in rounds:
        for name, entry in record.get(section, {}).items():
            if entry.get("dice") is not None:
                series.setdefault(name, []).append((record["round"], entry["dice"]))
    return series


def _epsilon(rounds: Sequence[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for record in rounds:
        for site, metrics in record.get("train", {}).items():
            if metrics.get("epsilon") is not None:
                series.setdefault(site, []).append((record["round"], metrics["epsilon"]))
    return series


def learning_curve(path: Path, rounds: Sequence[dict[str, Any]]) -> Path:
    heldout, validation, epsilon = _series(rounds, "heldout"), _series(rounds, "validation"), _epsilon(rounds)
    panels = 2 if epsilon else 1
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), dpi=120, squeeze=False)
    axis = axes[0][0]
    for name, points in heldout.items():
        axis.plot(*zip(*points), marker="o", label=f"held-out {name}")
    for name, points in validation.items():
        axis.plot(*zip(*points), linestyle="--", alpha=0.7, label=f"validation {name}")
    axis.set(xlabel="round", ylabel="Dice", ylim=(0, 1), title="Global model")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    if epsilon:
        axis = axes[0][1]
        for site, points in epsilon.items():
            axis.plot(*zip(*points), marker=".", label=site)
        axis.set(xlabel="round", ylabel="epsilon spent", title="Privacy (DP-SGD)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return save_figure(figure, path)


def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_markdown(config: dict[str, Any], rounds: Sequence[dict[str, Any]], *, stopped: str | None = None) -> str:
    heldout_names = sorted({n for r in rounds for n in r.get("heldout", {})})
    lines = [
        f"# Federated run: {config.get('experiment', 'custom')}",
        "",
        f"Sites: `{config.get('site-map')}`; {len(rounds)} round(s) of {config.get('local-steps')} local steps; "
        f"model `{config.get('model')}`; strategy {config.get('strategy')}; label fraction "
        f"{config.get('label-fraction')}; Mean Teacher {'on' if config.get('mean-teacher') else 'off'}; "
        f"DP {'epsilon ' + str(config.get('dp-epsilon')) if config.get('dp-epsilon') else 'off'}; "
        f"HE {'on' if config.get('he') else 'off'}.",
        "",
    ]
    if stopped:
        lines += [f"**Stopped early:** {stopped}", ""]
    header = (
        "| Round | " + " | ".join(f"held-out {n} Dice" for n in heldout_names) + " | validation Dice | "
        "sites trained | max epsilon |"
    )
    lines += [header, "|" + "---|" * (4 + len(heldout_names))]
    for record in rounds:
        held = " | ".join(_fmt(record.get("heldout", {}).get(n, {}).get("dice")) for n in heldout_names)
        epsilons = [m.get("epsilon") for m in record.get("train", {}).values() if m.get("epsilon") is not None]
        lines.append(
            f"| {record['round']} | {held} | {_fmt(record.get('validation_dice'))} | "
            f"{len(record.get('train', {}))} | {_fmt(max(epsilons) if epsilons else None, 3)} |"
        )
    events = [(r["round"], site, reason) for r in rounds for site, reason in r.get("left_out", {}).items()]
    if events:
        lines += ["", "Sites left out of a round:", ""]
        lines += [f"- round {rnd}: {site}: {reason}" for rnd, site, reason in events]
    lines += [
        "",
        "![learning curve](learning_curve.png)",
        "",
        "The best checkpoint (`checkpoints/best.pt`) is chosen on the training sites' validation images, "
        "never on a held-out centre. Score it at full resolution with `fedseg evaluate --checkpoint "
        "checkpoints/best.pt --data ROOT --centres CENTRE --out DIR`.",
        "",
    ]
    if config.get("dp-epsilon"):
        lines += [_dp_validation_note(config), ""]
    return "\n".join(lines)


def _dp_validation_note(config: dict[str, Any]) -> str:
    noise = config.get("dp-validation-noise") or 0
    if noise:
        return (
            f"Under DP the validation Dice is the sites' noised release (Gaussian noise of std {noise:g} on each "
            "site's sum of per-unit Dice, in the privacy ledger), so best.pt is chosen on a noisy score."
        )
    return (
        "Under DP the training sites keep their validation scores (dp-validation-noise = 0): the server has no "
        "validation Dice and writes no best.pt; use checkpoints/last.pt (or .he)."
    )


def write_summary(
    root: Path, config: dict[str, Any], rounds: Sequence[dict[str, Any]], stopped: str | None = None
) -> None:
    if rounds:
        learning_curve(root / "learning_curve.png", rounds)
    atomic_write_text(root / "summary.md", summary_markdown(config, rounds, stopped=stopped))
