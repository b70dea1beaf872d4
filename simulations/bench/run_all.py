"""Reproduce fedseg's results: accuracy on held-out centres, privacy-utility, and cost.

    python -m simulations.bench.run_all --quick                 # a 2-core CPU, under 15 minutes
    python -m simulations.bench.run_all --budget-minutes 9      # the full suite, in parts (GPU machine)
    python -m simulations.bench.run_all --list                  # what would run, and what is done

Results go to ``simulations/results/<date>-<machine>/`` (``--out`` to choose): one JSON per
experiment, PNG plots and ``RESULTS.md``, regenerated after every experiment. An experiment
whose JSON exists is not run again, and runs that were cut off by ``--budget-minutes`` resume
from their checkpoints, so the full suite runs as parts of at most ten minutes each: run the
same command again until it reports nothing left.

Every model is scored the same way: its final global checkpoint, at the held-out centre's full
resolution, with ``fedseg evaluate`` (Dice with a bootstrap 95 % interval). Nothing is tuned on
a held-out centre.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib
import torch

from fedseg.files import atomic_write_json
from simulations.bench.results import write_results

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("FEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
RETINA = SHARED_DATA / "retina"
POLYP = SHARED_DATA / "polyp"


@dataclass(frozen=True)
class Scale:
    """How big every run is: quick (CPU smoke scale) or full (GPU)."""

    name: str
    rounds: int
    local_steps: int
    batch_size: int
    crop_size: int
    retina_resize: int
    polyp_resize: int
    model_options: str
    seeds: tuple[int, ...]
    heldout_each: bool
    polyp_accuracy: bool
    epsilons: tuple[float, ...]
    device: str
    privacy_sites: str
    cost: dict[str, Any] = field(default_factory=dict)


QUICK = Scale(
    "quick",
    rounds=3,
    local_steps=12,
    batch_size=4,
    crop_size=64,
    retina_resize=320,
    polyp_resize=128,
    model_options='{"widths": [8, 16, 32, 64], "aspp_rates": [1, 2, 3]}',
    seeds=(0,),
    heldout_each=False,
    polyp_accuracy=False,
    epsilons=(3.0, 30.0),
    device="cpu",
    privacy_sites="Kvasir-SEG/1-of-20,Kvasir-SEG/2-of-20,heldout:Kvasir-SEG/test",
    cost={"dp": ["--batch-size", "4", "--crop", "64", "--steps", "2", "--warmup", "1"], "sites": "2,4"},
)
FULL = Scale(
    "full",
    rounds=30,
    local_steps=100,
    batch_size=16,
    crop_size=256,
    retina_resize=0,
    polyp_resize=384,
    model_options="{}",
    seeds=(0, 1, 2),
    heldout_each=True,
    polyp_accuracy=True,
    epsilons=(1.0, 3.0, 8.0, 30.0),
    device="auto",
    privacy_sites="Kvasir-SEG/1-of-4,Kvasir-SEG/2-of-4,Kvasir-SEG/3-of-4,Kvasir-SEG/4-of-4,heldout:Kvasir-SEG/test",
    cost={"dp": ["--batch-size", "16", "--crop", "256"], "sites": "2,4,8,16,32"},
)


@dataclass(frozen=True)
class Experiment:
    """One row of a results table."""

    id: str
    table: str
    kind: str  # federated | pooled | bench
    settings: dict[str, Any]
    label: str
    seed: int = 0


# -- what runs ---------------------------------------------------------------------------------------
VARIANTS = (  # label, run-config overrides
    ("FedAvg", {}),
    ("FedAvg + 25 % labels", {"label-fraction": 0.25}),
    ("FedAvg + 25 % labels + Mean Teacher", {"label-fraction": 0.25, "mean-teacher": True}),
    ("+ DP (epsilon 8)", {"label-fraction": 0.25, "mean-teacher": True, "dp-epsilon": 8.0}),
    ("+ DP (epsilon 3)", {"label-fraction": 0.25, "mean-teacher": True, "dp-epsilon": 3.0}),
    ("+ HE", {"label-fraction": 0.25, "mean-teacher": True, "he": True}),
)
HEADLINE = {"pooled", "+ HE", "+ HE + DP (epsilon 8)"}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def accuracy_experiments(scale: Scale, task: str, training: list[str], heldout: str) -> list[Experiment]:
    table = f"accuracy/{task}/{heldout}"
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for site in training:
        rows.append((f"local only: {site}", "federated", {"site-map": f"{site},heldout:{heldout}"}))
    rows.append(
        ("pooled", "pooled", {"centres": [s.split("/")[0] for s in training][:1] if task == "polyp" else training})
    )
    sites = ",".join(training) + f",heldout:{heldout}"
    variants = list(VARIANTS) + [
        ("+ HE + DP (epsilon 8)", {"label-fraction": 0.25, "mean-teacher": True, "he": True, "dp-epsilon": 8.0})
    ]
    for label, overrides in variants:
        rows.append((label, "federated", {"site-map": sites, **overrides}))
    experiments = []
    for label, kind, settings in rows:
        seeds = scale.seeds if label in HEADLINE else scale.seeds[:1]
        for seed in seeds:
            experiments.append(
                Experiment(
                    f"{_slug(table)}--{_slug(label)}--seed{seed}",
                    table,
                    kind,
                    {"task": task, "heldout": heldout, **settings},
                    label,
                    seed,
                )
            )
    return experiments


def privacy_experiments(scale: Scale) -> list[Experiment]:
    sites = scale.privacy_sites
    points = [(eps, {"dp-epsilon": eps}) for eps in scale.epsilons] + [(float("inf"), {})]
    return [
        Experiment(
            f"privacy-utility--polyp--eps{eps:g}",
            "privacy/polyp",
            "federated",
            {"task": "polyp", "heldout": "Kvasir-SEG-test", "site-map": sites, **overrides},
            "no DP" if eps == float("inf") else f"epsilon {eps:g}",
        )
        for eps, overrides in points
    ]


def cost_experiments(scale: Scale) -> list[Experiment]:
    return [
        Experiment(
            "cost--dp-overhead",
            "cost",
            "bench",
            {"module": "dp_overhead", "args": scale.cost["dp"]},
            "DP-SGD and Mean-Teacher step overhead",
        ),
        Experiment(
            "cost--he-overhead",
            "cost",
            "bench",
            {"module": "he_overhead", "args": ["--round-time"]},
            "encrypted aggregation",
        ),
        Experiment(
            "cost--sites-scaling",
            "cost",
            "bench",
            {"module": "sites_scaling", "args": ["--sites", scale.cost["sites"]]},
            "round wall time against simulated sites",
        ),
    ]


def all_experiments(scale: Scale) -> list[Experiment]:
    retina = ["STARE", "AV-WIDE", "CHASE_DB1"]
    heldouts = retina if scale.heldout_each else ["CHASE_DB1"]
    experiments: list[Experiment] = []
    for heldout in heldouts:
        experiments += accuracy_experiments(scale, "retina", [c for c in retina if c != heldout], heldout)
    if scale.polyp_accuracy:
        shards = [f"Kvasir-SEG/{k}-of-4" for k in range(1, 5)]
        experiments += accuracy_experiments(scale, "polyp", shards, "Kvasir-SEG/test")
    return experiments + privacy_experiments(scale) + cost_experiments(scale)


# -- running one experiment ------------------------------------------------------------------------
def base_run_config(scale: Scale, experiment: Experiment, work: Path) -> dict[str, Any]:
    task = experiment.settings["task"]
    name = "retina-loco" if task == "retina" else "polyp-sites"
    config = tomllib.loads((REPO / "simulations" / f"{name}.toml").read_text())
    config.update(
        {
            "experiment": experiment.id,
            "data-root": str(RETINA if task == "retina" else POLYP),
            "out": str(work / "run"),
            "num-server-rounds": scale.rounds,
            "local-steps": scale.local_steps,
            "batch-size": scale.batch_size,
            "crop-size": scale.crop_size,
            "seed": experiment.seed,
            "model-options": scale.model_options,
            "device": scale.device,
            "resize": scale.retina_resize if task == "retina" else scale.polyp_resize,
            "tile-size": 2 * scale.crop_size,
        }
    )
    if scale.name == "quick":
        config["round-timeout"] = 600.0
    return config


def run_federated(scale: Scale, experiment: Experiment, work: Path) -> Path:
    """Run the federation; returns the final plaintext checkpoint (decrypted at a site when HE was on)."""
    from fedseg.crypto.checkpoint import decrypt_checkpoint
    from fedseg.federation.sites import parse_site_map
    from simulations.bench.he_overhead import credentials
    from simulations.launch import simulate

    config = base_run_config(scale, experiment, work)
    config.update({k: v for k, v in experiment.settings.items() if k not in ("task", "heldout", "centres")})
    if config.get("he"):  # the key ceremony's files, all in one folder (a simulation plays every site)
        names = [spec.name for spec in parse_site_map(config["site-map"])]
        credentials(work / "keys", names)
        config["he-keys"] = str(work / "keys" / "he")
        config["registry"] = str(work / "keys" / "federation.json")
        config["node-keys"] = str(work / "keys" / "node-keys")
    completed = simulate(config, quiet=True)
    checkpoints = work / "run" / "checkpoints"
    if (checkpoints / "last.he").exists():
        return decrypt_checkpoint(
            checkpoints / "last.he", work / "keys" / "he" / "site.context", checkpoints / "last.pt"
        )
    if not (checkpoints / "last.pt").exists():
        raise RuntimeError(f"{experiment.id}: the federation wrote no model\n{completed.stdout[-3000:]}")
    return checkpoints / "last.pt"


def run_pooled(scale: Scale, experiment: Experiment, work: Path) -> Path:
    """The federation's pooled reference (``FederationConfig.pooled_config``: its data, model, loss,
    optimiser and Mean Teacher settings over the training centres pooled, for rounds x local steps),
    with a constant learning rate and no validation."""
    from fedseg.federation.config import FederationConfig
    from fedseg.training.pooled import train

    config = base_run_config(scale, experiment, work)
    if experiment.settings["task"] != "polyp":
        config["test-fraction"] = 0.0
    federation = FederationConfig.from_run_config(config)
    pooled = federation.pooled_config(Path(config["data-root"]), tuple(experiment.settings["centres"]), work / "run")
    train_config = replace(
        pooled,
        optim=replace(pooled.optim, schedule="constant"),
        workers=0,
        val_every=0,
        checkpoint_every=max(1, pooled.steps // 4),
    )
    resume = (work / "run" / "checkpoints" / "resume.pt").exists()
    return train(train_config, resume=resume, progress=False).last_checkpoint


def score(scale: Scale, experiment: Experiment, checkpoint: Path, work: Path) -> dict[str, Any]:
    """Dice (with its bootstrap interval) of the final model on the held-out centre, full resolution."""
    from fedseg.data.layout import scan_dataset
    from fedseg.data.splits import SplitConfig, make_manifest
    from fedseg.evaluation.evaluate import EvaluateConfig, evaluate
    from fedseg.inference.predictor import InferenceConfig

    task = experiment.settings["task"]
    heldout = experiment.settings["heldout"]
    root = RETINA if task == "retina" else POLYP
    manifest, split, centre = None, "all", heldout
    if heldout.endswith("/test") or heldout.endswith("-test"):
        centre = heldout.split("/")[0].removesuffix("-test")
        manifest = work / "heldout-manifest.json"
        test_fraction = tomllib.loads((REPO / "simulations" / "polyp-sites.toml").read_text())["test-fraction"]
        make_manifest(
            scan_dataset(root, [centre]),
            SplitConfig(seed=experiment.seed, val_fraction=0.0, test_fraction=test_fraction),
        ).save(manifest)
        split = "test"
    report = evaluate(
        EvaluateConfig(
            checkpoint=checkpoint,
            data=root,
            centres=(centre,),
            out=work / "heldout",
            inference=InferenceConfig(tile_size=2 * scale.crop_size),
            device=scale.device,
            manifest=manifest,
            split=split,
            examples=False,
        ),
        progress=False,
    )
    metrics = report.metrics["centres"][centre]
    return {key: metrics[key] for key in ("n_images", "dice", "dice_ci95", "iou", "sensitivity", "precision", "hd95")}


def privacy_of(work: Path) -> dict[str, Any] | None:
    ledger = work / "run" / "privacy.jsonl"
    if not ledger.exists():
        return None
    entries = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    return {"max_epsilon": max(e["epsilon"] for e in entries), "delta": max(e["delta"] for e in entries)}


def run_bench(experiment: Experiment, out: Path) -> dict[str, Any]:
    target = out / "work" / experiment.id / "bench.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        f"simulations.bench.{experiment.settings['module']}",
        *experiment.settings["args"],
        "--out",
        str(target),
    ]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(target.read_text())["results"]


def run_experiment(scale: Scale, experiment: Experiment, out: Path) -> dict[str, Any]:
    work = out / "work" / experiment.id
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "id": experiment.id,
        "table": experiment.table,
        "label": experiment.label,
        "kind": experiment.kind,
        "seed": experiment.seed,
        "scale": scale.name,
        "settings": experiment.settings,
    }
    if experiment.kind == "bench":
        result["results"] = run_bench(experiment, out)
    else:
        checkpoint = (run_pooled if experiment.kind == "pooled" else run_federated)(scale, experiment, work)
        result["heldout"] = score(scale, experiment, checkpoint, work)
        result["privacy"] = privacy_of(work)
    result["seconds"] = time.perf_counter() - started
    return result


# -- the suite ----------------------------------------------------------------------------------------
def machine_name() -> str:
    if torch.cuda.is_available():
        return _slug(torch.cuda.get_device_name(0))
    return f"cpu-{_slug(platform.machine())}-{__import__('os').cpu_count()}core"


def default_out(scale: Scale) -> Path:
    return REPO / "simulations" / "results" / f"{dt.date.today().isoformat()}-{machine_name()}-{scale.name}"


def run_suite(scale: Scale, out: Path, *, budget_minutes: float | None, only: set[str] | None) -> int:
    experiments = [e for e in all_experiments(scale) if only is None or e.id in only]
    missing = [str(root) for root in (RETINA, POLYP) if not root.is_dir()]
    if missing:
        print(f"data not found: {', '.join(missing)}; set FEDSEG_SHARED_DATA to the shared data folder")
        return 2
    started = time.monotonic()
    failed: list[str] = []
    for experiment in experiments:
        target = out / f"{experiment.id}.json"
        if target.exists():
            continue
        elapsed = (time.monotonic() - started) / 60
        if budget_minutes is not None and elapsed >= budget_minutes:
            break
        timeout = None if budget_minutes is None else max(60.0, (budget_minutes - elapsed) * 60)
        print(f"[{elapsed:5.1f} min] {experiment.id}", flush=True)
        try:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "simulations.bench.run_all",
                    "--scale",
                    scale.name,
                    "--out",
                    str(out),
                    "--one",
                    experiment.id,
                ],
                cwd=REPO,
                check=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            print(f"  stopped by --budget-minutes; run again to resume {experiment.id}", flush=True)
            break
        except subprocess.CalledProcessError as error:
            print(f"  failed (exit {error.returncode}); see the log above", flush=True)
            failed.append(experiment.id)
        write_results(out, scale.name)
    remaining = [e.id for e in experiments if not (out / f"{e.id}.json").exists()]
    write_results(out, scale.name)
    print(
        f"{len(experiments) - len(remaining)} of {len(experiments)} experiments done; results in {out / 'RESULTS.md'}"
    )
    if failed:
        print(f"{len(failed)} failed: {', '.join(failed)}")
        return 1
    if remaining:
        print(f"{len(remaining)} left: run the same command again to continue")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the CPU-sized suite (under 15 minutes on 2 cores)")
    parser.add_argument("--scale", choices=("quick", "full"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--budget-minutes", type=float, default=None, help="stop after this long; run again to resume")
    parser.add_argument("--only", default=None, help="comma-separated experiment ids")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    scale = QUICK if (args.quick or args.scale == "quick") else FULL
    out = args.out or default_out(scale)
    out.mkdir(parents=True, exist_ok=True)
    if args.one:
        experiment = next(e for e in all_experiments(scale) if e.id == args.one)
        atomic_write_json(out / f"{experiment.id}.json", run_experiment(scale, experiment, out))
        return 0
    if args.list:
        for experiment in all_experiments(scale):
            done = "done" if (out / f"{experiment.id}.json").exists() else "    "
            print(f"{done}  {experiment.id}")
        return 0
    only = set(args.only.split(",")) if args.only else None
    return run_suite(scale, out, budget_minutes=args.budget_minutes, only=only)


if __name__ == "__main__":
    sys.exit(main())
