"""RESULTS.md and its plots, rebuilt from the experiment JSON files of a results folder."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from fedseg.files import atomic_write_text
from fedseg.plotting import plt, save_figure


def load(out: Path) -> list[dict[str, Any]]:
    """Every experiment's result, in the order the suite defines."""
    files = [json.loads(p.read_text()) for p in out.glob("*.json")]
    results = [r for r in files if "table" in r]  # not the parts' progress.json
    return sorted(results, key=lambda r: (r.get("order", 10**6), r["id"]))


def _fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def accuracy_rows(results: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    """Rows of one accuracy table: seeds of a label pooled (mean Dice, smallest/largest interval bound)."""
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        if result["table"] == table:
            by_label[result["label"]].append(result)
    rows = []
    for label, runs in by_label.items():
        dice = [r["heldout"]["dice"] for r in runs if r["heldout"].get("dice") is not None]
        ci = [r["heldout"]["dice_ci95"] for r in runs if r["heldout"].get("dice_ci95")]
        eps = [r["privacy"]["max_epsilon"] for r in runs if r.get("privacy")]
        rows.append(
            {
                "label": label,
                "seeds": len(runs),
                "dice": sum(dice) / len(dice) if dice else None,
                "dice_sd": _sd(dice),
                "ci": [min(c[0] for c in ci), max(c[1] for c in ci)] if ci else None,
                "epsilon": max(eps) if eps else None,
                "minutes_by_machine": minutes_by_machine(runs),
                "n_images": runs[0]["heldout"].get("n_images"),
            }
        )
    return rows


def minutes_by_machine(runs: list[dict[str, Any]]) -> dict[str | None, float]:
    """Mean minutes per seed on each machine the row's seeds ran on (None: a record from before rows named it)."""
    seconds: dict[str | None, list[float]] = defaultdict(list)
    for run in runs:
        seconds[run.get("machine")].append(run["seconds"])
    return {machine: sum(values) / len(values) / 60 for machine, values in seconds.items()}


def minutes_text(by_machine: dict[str | None, float]) -> str:
    """``22.1 (2-core x86_64 CPU), 2.5 (NVIDIA H200)``: a row's minutes are only comparable on one machine."""
    return ", ".join(f"{m:.1f}" + (f" ({machine})" if machine else "") for machine, m in by_machine.items())


def _sd(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


NOT_RUN = "not run yet"
NOT_EXPLAINED = "not explained."


def not_run(pending: list[tuple[str, str]], table: str, columns: int) -> list[str]:
    """Table lines for the rows of ``table`` that have no result yet."""
    return [not_run_line(label, columns) for t, label in pending if t == table]


def not_run_line(label: str, columns: int) -> str:
    return f"| {label} | {NOT_RUN} |" + " |" * (columns - 2)


def accuracy_section(
    results: list[dict[str, Any]], out: Path, pending: list[tuple[str, str]], order: list[tuple[str, str]]
) -> list[str]:
    """One table per held-out centre, its rows in the suite's ``order`` (a (table, label) per run, so a
    label appears once per seed); a row with seeds still to run shows how many of them are done."""
    lines: list[str] = []
    tables = {r["table"] for r in results} | {table for table, _ in pending}
    for table in sorted(t for t in tables if t.startswith("accuracy/")):
        rows = {row["label"]: row for row in accuracy_rows(results, table)}
        planned = Counter(label for t, label in order if t == table)
        _, task, heldout = table.split("/", 2)
        lines += [
            f"### {task}: held-out {heldout}",
            "",
            "| Training | Held-out Dice | 95 % CI | seeds (sd) | epsilon | minutes per seed (machine) |",
            "|---|---:|---|---|---:|---:|",
        ]
        labels = list(dict.fromkeys([*planned, *rows]))
        for label in labels:
            if label in rows:
                lines.append(accuracy_line(rows[label], planned[label]))
            elif (table, label) in pending:
                lines.append(not_run_line(label, 6))
        done = [rows[label] for label in labels if label in rows]
        lines += below_local_only(results, table, done)
        if not done:
            lines.append("")
            continue
        name = accuracy_plot(done, task, heldout, out)
        lines += ["", f"![{table}]({name})", ""]
    return lines


def accuracy_plot(rows: list[dict[str, Any]], task: str, heldout: str, out: Path) -> str:
    """A bar per row (top to bottom in the table's order), with its 95 % interval; returns the PNG's name."""
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2), dpi=110)
    labels = [r["label"] for r in rows][::-1]
    values = [r["dice"] or 0.0 for r in rows][::-1]
    errors = [
        [v - (r["ci"] or [v, v])[0] for v, r in zip(values, rows[::-1])],
        [(r["ci"] or [v, v])[1] - v for v, r in zip(values, rows[::-1])],
    ]
    axis.barh(labels, values, xerr=errors, capsize=3, color="#4c72b0")
    axis.set(xlim=(0, 1), xlabel=f"Dice on held-out {heldout} (95 % CI)", title=f"{task}: held-out {heldout}")
    axis.grid(axis="x", alpha=0.3)
    name = f"accuracy-{task}-{heldout.replace('/', '-')}.png"
    save_figure(figure, out / name)
    return name


def accuracy_line(row: dict[str, Any], planned: int) -> str:
    ci = f"{row['ci'][0]:.3f}–{row['ci'][1]:.3f}" if row["ci"] else "–"
    seeds = f"{row['seeds']}" + (f" of {planned}" if planned > row["seeds"] else "")
    seeds += f" ({row['dice_sd']:.3f})" if row["dice_sd"] is not None else ""
    return (
        f"| {row['label']} | {_fmt(row['dice'])} | {ci} | {seeds} | {_fmt(row['epsilon'], 2)} | "
        f"{minutes_text(row['minutes_by_machine'])} |"
    )


def below_local_only(results: list[dict[str, Any]], table: str, rows: list[dict[str, Any]]) -> list[str]:
    """A note for each row scoring below the best local-only row, with the facts its run recorded."""
    local = [r["dice"] for r in rows if r["label"].startswith("local only") and r["dice"] is not None]
    if not local:
        return []
    best = max(local)
    notes = []
    for row in rows:
        if row["label"].startswith("local only") or row["dice"] is None or row["dice"] >= best:
            continue
        runs = [r for r in results if r["table"] == table and r["label"] == row["label"]]
        record = next((r["federation"] for r in runs if "federation" in r), None)
        prior = next((r["prior"] for r in runs if "prior" in r), None)
        pooled = next((r["pooled"] for r in runs if "pooled" in r), None)
        why = explain_pooled(pooled, rows) if pooled else explain(record, prior, local_labels(results, table))
        noise = within_noise(row, best, rows)
        if noise:
            why = f"{noise}." if why.endswith(NOT_EXPLAINED) else f"{noise}; {why}"
        notes.append(f"- **{row['label']}** ({row['dice']:.3f}, below {best:.3f}): {why}")
    return ["", "Rows below local-only training, and what their runs recorded:", "", *notes] if notes else []


def within_noise(row: dict[str, Any], best: float, rows: list[dict[str, Any]]) -> str:
    """Whether ``row``'s gap to the best local-only Dice is within what this table measured as noise: its own
    95 % interval over images, or twice the seed-to-seed standard deviation of a row run with several seeds."""
    if row["ci"] and row["ci"][1] >= best:
        return f"its 95 % interval ({row['ci'][0]:.3f}–{row['ci'][1]:.3f}) includes {best:.3f}"
    seeded = [r for r in rows if r["dice_sd"] is not None]
    if not seeded:
        return ""
    widest = max(seeded, key=lambda r: r["dice_sd"])
    gap = best - row["dice"]
    if gap > 2 * widest["dice_sd"]:
        return ""
    return (
        f"the gap ({gap:.3f}) is within twice the seed-to-seed standard deviation measured in this table "
        f"({widest['label']}: {widest['dice_sd']:.3f} over {widest['seeds']} seeds); this row has {row['seeds']}"
    )


def explain_pooled(pooled: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A pooled row draws its batches from every centre's labelled images in proportion: name the shares and
    the local-only score of each centre it pools."""
    labelled = pooled["labelled"]
    total = sum(labelled.values())
    local = {r["label"].removeprefix("local only: "): r["dice"] for r in rows if r["label"].startswith("local only")}
    shares = ", ".join(
        f"{centre} {n} ({100 * n / total:.0f} %"
        + (f"; alone it scores {local[centre]:.3f} here" if local.get(centre) is not None else "")
        + ")"
        for centre, n in labelled.items()
    )
    return f"its batches are drawn from the pooled labelled images in proportion: {shares}."


def local_labels(results: list[dict[str, Any]], table: str) -> dict[str, int]:
    """Each site's labelled images in its local-only row of ``table`` (every label of the site)."""
    local = [r for r in results if r["table"] == table and r["label"].startswith("local only")]
    return {site: f["labelled"] for r in local for site, f in r.get("federation", {}).get("sites", {}).items()}


def explain(
    record: dict[str, Any] | None, prior: dict[str, Any] | None = None, local: dict[str, int] | None = None
) -> str:
    """Why a federated row may score below local-only, from its ``federation`` record (labels, DP noise, gaps),
    the labelled images of each site's local-only row (``local``) and, for a row that started from the public
    prior, the prior's own held-out score."""
    sites, local = (record or {}).get("sites", {}), local or {}
    reasons = []
    if prior:
        ci = prior.get("dice_ci95") or [prior["dice"]] * 2
        reasons.append(
            f"it started from the public prior (generated images only), which alone scores {prior['dice']:.3f} "
            f"({ci[0]:.3f}–{ci[1]:.3f}) here"
        )
    whole = {s: max(f.get("examples", 0), local.get(s, 0)) for s, f in sites.items()}
    partial = {s: f for s, f in sites.items() if "labelled" in f and f["labelled"] < whole[s]}
    if partial:
        counts = ", ".join(f"{s} {f['labelled']} of {whole[s]}" for s, f in partial.items())
        reasons.append(f"labelled images per site {counts} (local-only rows train on every label of their site)")
    noisy = {s: f for s, f in sites.items() if "noise_multiplier" in f}
    if noisy:
        noise = ", ".join(
            f"{s} {f['noise_multiplier']:.1f} at sampling rate {f['sample_rate']:.2f} of {f['examples']} images"
            for s, f in noisy.items()
        )
        reasons.append(f"DP-SGD noise multiplier {noise}")
    if record and record.get("rounds_with_sites_left_out"):
        gaps = ", ".join(str(r) for r in record["rounds_with_sites_left_out"])
        reasons.append(f"a site's update was left out in round(s) {gaps}")
    return "; ".join(reasons) + "." if reasons else f"its run recorded no cause: {NOT_EXPLAINED}"


def privacy_section(results: list[dict[str, Any]], out: Path, pending: list[tuple[str, str]]) -> list[str]:
    points = [r for r in results if r["table"].startswith("privacy/")]
    waiting = [
        line
        for table in sorted({t for t, _ in pending if t.startswith("privacy/")})
        for line in not_run(pending, table, 4)
    ]
    if not points:
        return (
            ["| Privacy | epsilon spent | Held-out Dice | 95 % CI |", "|---|---:|---:|---|", *waiting, ""]
            if waiting
            else []
        )
    points.sort(key=lambda r: r["settings"].get("dp-epsilon", math.inf))
    lines = ["| Privacy | epsilon spent | Held-out Dice | 95 % CI |", "|---|---:|---:|---|"]
    for r in points:
        ci = r["heldout"].get("dice_ci95")
        lines.append(
            f"| {r['label']} | {_fmt((r.get('privacy') or {}).get('max_epsilon'), 2)} | "
            f"{_fmt(r['heldout']['dice'])} | {f'{ci[0]:.3f}–{ci[1]:.3f}' if ci else '–'} |"
        )
    lines += waiting
    finite = [r for r in points if "dp-epsilon" in r["settings"]]
    figure, axis = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    if finite:
        axis.plot(
            [r["settings"]["dp-epsilon"] for r in finite],
            [r["heldout"]["dice"] for r in finite],
            marker="o",
            label="DP-SGD",
        )
    for r in points:
        if "dp-epsilon" not in r["settings"]:
            axis.axhline(r["heldout"]["dice"], linestyle="--", color="grey", label="no DP")
    axis.set(
        xscale="log",
        xlabel="epsilon (per site, whole run)",
        ylabel="held-out Dice",
        ylim=(0, 1),
        title="Privacy-utility (polyp-sites)",
    )
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, out / "privacy-utility.png")
    return lines + ["", "![privacy-utility](privacy-utility.png)", ""]


def cost_section(results: list[dict[str, Any]], out: Path, pending: list[tuple[str, str]]) -> list[str]:
    by_id = {r["id"]: r for r in results if r["table"] == "cost"}
    waiting = [label for table, label in pending if table == "cost"]
    lines: list[str] = (
        ["| Cost benchmark | |", "|---|---|", *(f"| {w} | {NOT_RUN} |" for w in waiting), ""] if waiting else []
    )
    dp = by_id.get("cost--dp-overhead")
    if dp:
        lines += ["| Training step | seconds | x plain | peak memory (MiB) |", "|---|---:|---:|---:|"]
        lines += [
            f"| {row['variant']} | {row['seconds_per_step']:.3f} | {row['slowdown_vs_plain']:.2f} | "
            f"{row['peak_memory_mib']:.0f} |"
            for row in dp["results"]
        ]
        lines.append("")
    he = by_id.get("cost--he-overhead")
    if he:
        model = he["results"]["default_model"]
        lines += [
            "| Encrypted aggregation (default model) | value |",
            "|---|---:|",
            f"| parameters | {model['parameters']:,} |",
            f"| bytes up per site and round | {model['bytes_up_per_site'] / 2**20:.1f} MiB "
            f"({model['up_ratio_vs_fp32']:.2f}x fp32) |",
            f"| bytes down per site and round | {model['bytes_down_per_site'] / 2**20:.1f} MiB |",
            _protect_line(model),
            f"| aggregate ({model['sites']} sites, server) | {model['aggregate_seconds']:.2f} s |",
            f"| decrypt, per site | {model['decrypt_seconds_per_site']:.2f} s |",
        ]
        if "round_time" in he["results"]:
            round_time = he["results"]["round_time"]
            lines.append(
                f"| round wall time, plain / HE (small simulated run) | "
                f"{round_time['plain']['mean_round_seconds']:.1f} s / "
                f"{round_time['he']['mean_round_seconds']:.1f} s (+{100 * round_time['he_overhead']:.0f} %) |"
            )
        lines.append("")
    scaling = by_id.get("cost--sites-scaling")
    if scaling:
        rows = scaling["results"]
        lines += [
            "| Simulated sites | round seconds | run wall seconds | peak memory, RSS summed (MiB) | peak PSS (MiB) |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['sites']} | {r['mean_round_seconds']:.1f} | {r['wall_seconds']:.0f} | {r['peak_memory_mib']:.0f} | "
            f"{_fmt(r.get('peak_pss_mib'), 0)} |"
            for r in rows
        ]
        figure, axis = plt.subplots(figsize=(5.5, 3.6), dpi=110)
        axis.plot([r["sites"] for r in rows], [r["mean_round_seconds"] for r in rows], marker="o", label="round s")
        axis.set(xlabel="simulated sites", ylabel="seconds per round", xscale="log", title="Simulation cost")
        twin = axis.twinx()
        twin.plot([r["sites"] for r in rows], [r["peak_memory_mib"] for r in rows], marker="s", color="#c44e52")
        twin.set_ylabel("peak memory (MiB)")
        axis.grid(alpha=0.3)
        save_figure(figure, out / "sites-scaling.png")
        lines += ["", "![sites scaling](sites-scaling.png)", ""]
    return lines


QUICK_WARNING = (
    "> **These numbers are NOT results.** The quick profile is a smoke test: a few rounds of a small "
    "model on downscaled images, far too short to mean anything about fedseg's accuracy (a pooled model "
    "trained for 0.2 minutes scores below one trained on a single site; DP rows stay at 0 because the "
    "noise of DP-SGD swamps a few dozen steps of batches of 4). It checks that every path of the platform "
    "runs end to end and writes its files. For numbers that mean something on a CPU, see the `cpu` "
    "profile: `python -m simulations.bench.run_all --profile cpu --plan`, then `--next` until no part is "
    "left (every row trains at least the budget that reached a held-out CHASE_DB1 Dice of 0.70 on 2 "
    "cores)."
)
CPU_NOTE = (
    "**CPU profile**: every federated row trains 24 rounds x 30 local steps per site at batch 8 on crops "
    "of 256 (learning rate 0.003, one-cycle schedule, the held-out centre scored every 4th round), the "
    "budget that reached a held-out CHASE_DB1 Dice of 0.70 on 2 cores "
    "(`simulations/results/2026-11-22-cpu-x86-64-2core-time-to-dice`); a pooled row trains the "
    "federation's compute with the same settings: 24 x 30 steps for each of its training sites (1440 "
    "steps for two sites), which is also the federation's wall-clock budget on one machine, where the "
    "simulated sites share the cores. Minutes per seed: the wall time of one seed's run on the machine named "
    "beside it, with whatever else ran there. Rows on an NVIDIA H200 ran this same recipe with `--device cuda` "
    "on a GPU lent to one task, seven to nine rows at once (`simulations/results/2026-11-23-nvidia-h200-cpu-profile`), "
    "because 2 cores could not run every row in the time the task had; the same recipe gives the same held-out "
    "curve on a GPU and on 2 cores (FedAvg: 0.009 or less apart at every 4th round, "
    "`simulations/results/2026-11-22-nvidia-h100-cpu-profile`). Headline rows (pooled; + HE; + HE + DP epsilon 8) have "
    "3 seeds, the others 1. DP rows and every point of the privacy-utility curve start from fedseg's public prior "
    "(`fedseg prior`: 400 steps on generated images, no real image and no privacy spent): from random "
    "init DP-SGD learns nothing on a few dozen images per site (held-out CHASE_DB1 Dice 0.000 at this "
    "budget, `simulations/results/2026-11-22-nvidia-h100-cpu-profile`). Every model is its final global "
    "checkpoint, scored at the held-out centre's full resolution (threshold 0.5) with a bootstrap 95 % "
    "interval over images."
)


def _protect_line(model: dict[str, Any]) -> str:
    """Results from before masked aggregation timed encryption only (``encrypt_seconds_per_site``)."""
    if "protect_seconds_per_site" in model:
        return f"| mask, encrypt and sign, per site | {model['protect_seconds_per_site']:.2f} s |"
    return f"| encrypt, per site | {model['encrypt_seconds_per_site']:.2f} s |"


def write_results(
    out: Path, scale: str, *, pending: list[tuple[str, str]] | None = None, order: list[tuple[str, str]] | None = None
) -> Path:
    """RESULTS.md from the experiment JSON files in ``out``; ``pending`` (table, label) rows show as not run yet;
    ``order``: the suite's (table, label) of every run, in the order its tables list them."""
    results, pending = load(out), pending or []
    order = order or [(r["table"], r["label"]) for r in results] + pending
    command = (
        f"python -m simulations.bench.run_all{'' if scale == 'full' else f' --profile {scale}'} --out {_shown(out)}"
    )
    command += " --next" if scale == "cpu" else ""
    lines = [
        f"# fedseg results ({scale})",
        "",
        f"Folder `{out.name}`, {len(results)} experiment(s) done"
        + (f", {len(pending)} row(s) not run yet" if pending else "")
        + f". Regenerate with `{command}`.",
        "",
    ]
    if scale == "quick":
        lines[1:1] = ["", QUICK_WARNING]
    if scale == "cpu":
        lines += [CPU_NOTE, ""]
    if not results and not pending:
        return atomic_write_text(out / "RESULTS.md", "\n".join(lines + ["No experiment has finished yet."]))
    lines += ["## Accuracy on held-out centres", ""] + accuracy_section(results, out, pending, order)
    lines += ["## Privacy and utility", ""] + privacy_section(results, out, pending)
    lines += ["## Cost", ""] + cost_section(results, out, pending)
    return atomic_write_text(out / "RESULTS.md", "\n".join(lines))


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it (commands stay copyable)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
