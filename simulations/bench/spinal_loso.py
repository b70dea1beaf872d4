"""Leave-one-site-out on the six spinal-cord MRI sites, federated (``simulations/spinal-cord-loso.toml``).

For each held-out site: a Flower simulation where the five other sites train together (Mean Teacher on
their unlabelled repeat scans), then the last global model is scored on the held-out site's volumes:
Dice per volume, HD95 and mean surface distance in mm, with a 95 % interval from resampling the
site's slices (one subject per site: an interval over volumes would say nothing). Also times reading
and checking all volumes. Resumable: a fold whose result exists is not run again.

    python -m simulations.bench.spinal_loso --out simulations/results/DATE-cpu-.../spinal-loso
    python -m simulations.bench.spinal_loso --sites UCL,NWU --set num-server-rounds=4 --out /tmp/loso
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedseg.data.layout import scan_centre
from fedseg.inference.predictor import InferenceConfig
from fedseg.metrics import score_image
from fedseg.models.checkpoint import load_checkpoint
from fedseg.volumes.check import check_volumes
from fedseg.volumes.inference import VolumePredictor
from fedseg.volumes.scoring import native_volume
from simulations.bench.common import write_result
from simulations.launch import experiment_config, simulate

SITES = ("CEITEC", "Juntendo", "Milan", "NWU", "Philips", "UCL")
EXPERIMENT = "spinal-cord-loso"


def time_check(root: Path) -> dict[str, Any]:
    """Wall and CPU seconds to read and check every volume (CPU time: what an idle machine would take)."""
    started, cpu = time.perf_counter(), time.process_time()
    reports, plan = check_volumes(root, progress=False)
    return {
        "volumes": len(reports),
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "problems": sum(len(r.problems) for r in reports),
        "plan": plan.describe() if plan else None,
    }


def slice_bootstrap(prediction: list[np.ndarray], truth: list[np.ndarray], *, resamples: int = 2000) -> list[float]:
    """95 % interval of the site's Dice from resampling its slices (pooled tp/fp/fn per resample)."""
    counts = np.array(
        [
            (np.sum(p[:, :, z] & t[:, :, z]), np.sum(p[:, :, z] & ~t[:, :, z]), np.sum(~p[:, :, z] & t[:, :, z]))
            for p, t in zip(prediction, truth)
            for z in range(t.shape[2])
        ],
        dtype=np.float64,
    )
    rng = np.random.default_rng(0)
    picks = counts[rng.integers(0, len(counts), size=(resamples, len(counts)))].sum(axis=1)
    dice = 2 * picks[:, 0] / np.maximum(2 * picks[:, 0] + picks[:, 1] + picks[:, 2], 1)
    return [float(v) for v in np.quantile(dice, [0.025, 0.975])]


def score_site(checkpoint: Path, root: Path, site: str) -> dict[str, Any]:
    predictor = VolumePredictor.from_checkpoint(
        load_checkpoint(checkpoint), InferenceConfig(tile_size=192), torch.device("cpu")
    )
    rows, predictions, truths = [], [], []
    for record in (r for r in scan_centre(root, site) if r.labelled):
        loaded = native_volume(record, predictor)
        prediction = predictor.probabilities(loaded) > 0.5
        scores = score_image(prediction, np.asarray(loaded.mask), spacing=loaded.spacing)
        predictions.append(prediction)
        truths.append(np.asarray(loaded.mask))
        rows.append(
            {
                "volume": record.stem,
                "dice": scores.dice,
                "hd95_mm": scores.hd95,
                "msd_mm": scores.msd,
                "volume_difference": scores.volume_difference,
            }
        )
    return {
        "volumes": rows,
        "dice": float(np.mean([r["dice"] for r in rows])),
        "dice_ci95_slices": slice_bootstrap(predictions, truths),
    }


def run_fold(site: str, out: Path, overrides: list[str]) -> dict[str, Any]:
    result_path = out / f"fold-{site}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())["results"]
    config = experiment_config(EXPERIMENT, overrides)
    config["site-map"] = ",".join([s for s in SITES if s != site] + [f"heldout:{site}"])
    config["out"] = str(out / "work" / site)
    config["resume"] = False
    started = time.perf_counter()
    completed = simulate(config, quiet=True)
    seconds = time.perf_counter() - started
    checkpoint = Path(config["out"]) / "checkpoints" / "last.pt"
    if not checkpoint.exists():
        raise SystemExit(f"fold {site} produced no checkpoint:\n{(completed.stdout + completed.stderr)[-3000:]}")
    results = {"site": site, "seconds": seconds, **score_site(checkpoint, Path(config["data-root"]), site)}
    write_result(result_path, f"spinal-loso-{site}", results, run_config=config)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sites", default=",".join(SITES), help="held-out sites to run (default: all six)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run config override")
    parser.add_argument("--check-only", action="store_true", help="only time reading and checking the volumes")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(experiment_config(EXPERIMENT, args.set)["data-root"])
    check = time_check(root)
    print(
        f"read and checked {check['volumes']} volumes in {check['seconds']:.1f} s "
        f"({check['cpu_seconds']:.1f} s of CPU); {check['plan']}"
    )
    if args.check_only:
        write_result(args.out / "spinal-check.json", "spinal-check", check)
        return 0
    folds = []
    for site in [s.strip() for s in args.sites.split(",") if s.strip()]:
        fold = run_fold(site, args.out, args.set)
        low, high = fold["dice_ci95_slices"]
        print(f"held out {site}: Dice {fold['dice']:.3f} ({low:.3f}-{high:.3f}) in {fold['seconds'] / 60:.1f} min")
        folds.append(fold)
    summary = {"check": check, "folds": folds, "mean_dice": float(np.mean([f["dice"] for f in folds]))}
    write_result(args.out / "spinal-loso.json", "spinal-loso", summary, overrides=args.set)
    print(f"mean held-out Dice over {len(folds)} site(s): {summary['mean_dice']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
