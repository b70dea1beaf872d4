"""Reproduce fedseg's results: accuracy on held-out centres, privacy-utility, and cost.

    python -m simulations.bench.run_all --profile cpu --plan      # the CPU results: parts, minutes, total
    python -m simulations.bench.run_all --profile cpu --next      # run the next unfinished part (<= 10 min)
    python -m simulations.bench.run_all --profile cpu --next 50   # ... the next 50, one after the other
    python -m simulations.bench.run_all --profile cpu --part ID   # run one part by name
    python -m simulations.bench.run_all --profile cpu --next 9 --tables accuracy/retina/CHASE_DB1,cost
    python -m simulations.bench.run_all --profile cpu             # every part left (--budget-minutes M: stop)
    python -m simulations.bench.run_all --quick                   # smoke test: every path, numbers meaningless
    python -m simulations.bench.run_all --budget-minutes 9        # the full suite, in parts (GPU machine)
    python -m simulations.bench.run_all --list                    # what would run, and what is done

Profiles: ``quick`` runs every path end to end in minutes (its numbers are not results); ``cpu``
trains every row at least the budget that reached a held-out CHASE_DB1 Dice of 0.70 on 2 CPU cores
(24 rounds x 30 local steps per site at batch 8; pooled rows the same steps summed over the sites; see
``simulations/results/2026-11-22-cpu-x86-64-2core-time-to-dice``), in resumable parts of at most ten
minutes each (``simulations/bench/parts.py``); ``full`` is the GPU-sized suite.

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
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib
import torch

from fedseg.files import atomic_write_json
from fedseg.signals import Interrupted, stop_on_signals
from fedseg.training.config import TrainConfig
from simulations.bench import parts
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
    run_config: dict[str, Any] = field(default_factory=dict)  # more run-config keys for every run
    prior_steps: int = 400  # the public prior that DP rows start from (`fedseg prior`, generated images only)


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
    prior_steps=20,
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


CPU = replace(
    FULL,
    name="cpu",
    rounds=24,
    local_steps=30,
    batch_size=8,
    device="cpu",
    cost={"dp": ["--batch-size", "8", "--crop", "256"], "sites": "2,4,8,16,32"},
    # the settings of the time-to-Dice run that reached 0.70 (one-cycle schedule, scoring every 4th round)
    run_config={"lr": 0.003, "lr-schedule": "onecycle", "evaluate-every": 4},
)
PROFILES = {scale.name: scale for scale in (QUICK, CPU, FULL)}


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
    centres = [s.split("/")[0] for s in training][:1] if task == "polyp" else training
    rows.append(("pooled", "pooled", {"centres": centres, "sites": len(training)}))
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
    """In the order parts run: the headline table (CHASE_DB1 held out) and the cheap cost rows first."""
    retina = ["STARE", "AV-WIDE", "CHASE_DB1"]
    heldouts = ["CHASE_DB1", "STARE", "AV-WIDE"] if scale.heldout_each else ["CHASE_DB1"]
    retina_tables = [accuracy_experiments(scale, "retina", [c for c in retina if c != h], h) for h in heldouts]
    experiments = retina_tables[0] + cost_experiments(scale)
    if scale.polyp_accuracy:
        shards = [f"Kvasir-SEG/{k}-of-4" for k in range(1, 5)]
        experiments += accuracy_experiments(scale, "polyp", shards, "Kvasir-SEG/test")
    experiments += privacy_experiments(scale)
    return experiments + [e for table in retina_tables[1:] for e in table]


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
    config.update(scale.run_config)
    return config


def run_federated(scale: Scale, experiment: Experiment, work: Path) -> Path:
    """Run the federation; returns the final plaintext checkpoint (decrypted at a site when HE was on)."""
    from simulations.launch import simulate

    completed = simulate(federated_run_config(scale, experiment, work), quiet=True)
    checkpoint = federated_checkpoint(work)
    if checkpoint is None:
        raise RuntimeError(f"{experiment.id}: the federation wrote no model\n{completed.stdout[-3000:]}")
    return checkpoint


def federation_record(work: Path) -> dict[str, Any]:
    """What the server's ``rounds.jsonl`` says of a federated row: the rounds it finished, the rounds in which
    a site's update was left out, and each training site's facts in the last round (images, labelled images,
    DP noise multiplier and sampling rate), which RESULTS.md uses to explain a row below local-only; and the
    held-out curve: [round, Dice] at every round the held-out centre was scored."""
    path = work / "run" / "rounds.jsonl"
    rounds = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    keys = ("examples", "labelled", "noise_multiplier", "sample_rate")
    return {
        "rounds": rounds[-1]["round"] if rounds else 0,
        "rounds_with_sites_left_out": [r["round"] for r in rounds if r.get("left_out")],
        "heldout_curve": [
            [r["round"], centre["dice"]] for r in rounds for centre in r.get("heldout", {}).values() if "dice" in centre
        ],
        "sites": {site: {k: v for k, v in facts.items() if k in keys} for site, facts in rounds[-1]["train"].items()}
        if rounds
        else {},
    }


def check_finished(scale: Scale, experiment: Experiment, work: Path) -> dict[str, Any]:
    """The federation's record; a federation that stopped early (no usable update in a round) is not a row:
    raise, naming why."""
    record = federation_record(work)
    if record["rounds"] < scale.rounds:
        raise RuntimeError(
            f"{experiment.id}: the federation stopped after round {record['rounds']} of {scale.rounds}; "
            f"{work / 'run' / 'summary.md'} says why"
        )
    return record


def row_identity(scale: Scale, experiment: Experiment) -> dict[str, Any]:
    return {
        "id": experiment.id,
        "table": experiment.table,
        "label": experiment.label,
        "kind": experiment.kind,
        "seed": experiment.seed,
        "scale": scale.name,
        "machine": machine_description(scale.device),
        "settings": experiment.settings,
    }


def machine_description(device: str) -> str:
    """What a row ran on, as its results table names it: the GPU's name, or the CPU's cores."""
    if device != "cpu" and torch.cuda.is_available():  # "cuda", "cuda:1" or "auto"
        return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()}-core {platform.machine()} CPU"


def scored_row(scale: Scale, experiment: Experiment, checkpoint: Path, work: Path) -> dict[str, Any]:
    """A trained row's JSON: what it is, its held-out score, the privacy it spent and (federated) its record."""
    record = check_finished(scale, experiment, work) if experiment.kind == "federated" else None
    result = row_identity(scale, experiment)
    result |= {"heldout": score(scale, experiment, checkpoint, work), "privacy": privacy_of(work)}
    if starts_from_prior(experiment):
        result["prior"] = prior_score(scale, experiment, work.parent)
    if experiment.kind == "pooled":
        result["pooled"] = pooled_record(work)
    return result | ({"federation": record} if record else {})


def pooled_record(work: Path) -> dict[str, Any]:
    """What a pooled row's batches were drawn from: the labelled training images of each centre (its manifest)."""
    manifest = json.loads((work / "run" / "manifest.json").read_text())
    return {"labelled": {centre: len(split["labelled"]) for centre, split in manifest["centres"].items()}}


def prior_score(scale: Scale, experiment: Experiment, work: Path) -> dict[str, Any]:
    """The public prior alone on the row's held-out centre (what a DP row started from), scored once per
    centre and seed (the seed draws the polyp test split) and kept beside the prior."""
    folder = public_prior(scale, experiment.settings["task"], work).parent
    kept = folder / f"heldout-{_slug(experiment.settings['heldout'])}-seed{experiment.seed}.json"
    if not kept.exists():
        atomic_write_json(kept, score(scale, experiment, folder / "prior.pt", folder / kept.stem))
    return json.loads(kept.read_text())


def federated_run_config(scale: Scale, experiment: Experiment, work: Path) -> dict[str, Any]:
    """The run config of a federated row (with the key ceremony's files made when HE is on)."""
    from fedseg.federation.sites import parse_site_map
    from simulations.bench.he_overhead import credentials

    config = base_run_config(scale, experiment, work)
    config.update({k: v for k, v in experiment.settings.items() if k not in ("task", "heldout", "centres")})
    if starts_from_prior(experiment):
        config["init-checkpoint"] = str(public_prior(scale, experiment.settings["task"], work.parent))
    if config.get("he"):  # the key ceremony's files, all in one folder (a simulation plays every site)
        names = [spec.name for spec in parse_site_map(config["site-map"])]
        credentials(work / "keys", names)
        config["he-keys"] = str(work / "keys" / "he")
        config["registry"] = str(work / "keys" / "federation.json")
        config["node-keys"] = str(work / "keys" / "node-keys")
    return config


PRIOR_KIND = {"retina": "vessels", "polyp": "blobs"}


def starts_from_prior(experiment: Experiment) -> bool:
    """DP rows, and every point of the privacy-utility curve, start from the public prior: from random init
    DP-SGD learns nothing on a few dozen images per site (``simulations/results/*-dp-prior``)."""
    return "dp-epsilon" in experiment.settings or experiment.table.startswith("privacy")


def public_prior(scale: Scale, task: str, work: Path) -> Path:
    """``work/prior-<task>/prior.pt``: ``fedseg prior`` on generated images (no data read, no privacy spent),
    made once per task and results folder with the rows' model."""
    from fedseg.models import ModelConfig
    from fedseg.training.prior import PriorConfig, build_prior

    folder = work / f"prior-{task}"
    if not (folder / "prior.pt").exists():
        model = ModelConfig(options=json.loads(scale.model_options or "{}"))
        prior = PriorConfig(folder, model, kind=PRIOR_KIND[task], steps=scale.prior_steps, device=scale.device)
        build_prior(replace(prior, crop_size=min(128, scale.crop_size)), progress=False)
    return folder / "prior.pt"


def federated_checkpoint(work: Path) -> Path | None:
    """The federation's final plaintext model (decrypted at a site when HE was on); None when it wrote none."""
    from fedseg.crypto.checkpoint import decrypt_checkpoint

    checkpoints = work / "run" / "checkpoints"
    if (checkpoints / "last.he").exists():
        return decrypt_checkpoint(
            checkpoints / "last.he", work / "keys" / "he" / "site.context", checkpoints / "last.pt"
        )
    return checkpoints / "last.pt" if (checkpoints / "last.pt").exists() else None


def run_pooled(scale: Scale, experiment: Experiment, work: Path) -> Path:
    from fedseg.training.pooled import train

    resume = (work / "run" / "checkpoints" / "resume.pt").exists()
    return train(pooled_train_config(scale, experiment, work), resume=resume, progress=False).last_checkpoint


def pooled_train_config(scale: Scale, experiment: Experiment, work: Path) -> TrainConfig:
    """The federation's pooled reference (``FederationConfig.pooled_config``: its data, model, loss,
    optimiser and Mean Teacher settings over the training centres pooled) for the federation's compute
    (:func:`pooled_steps`), without validation; the learning-rate schedule is the scale's (constant
    where it names none)."""
    from fedseg.federation.config import FederationConfig

    config = base_run_config(scale, experiment, work)
    if experiment.settings["task"] != "polyp":
        config["test-fraction"] = 0.0
    federation = FederationConfig.from_run_config(config)
    pooled = federation.pooled_config(Path(config["data-root"]), tuple(experiment.settings["centres"]), work / "run")
    steps = pooled_steps(scale, experiment)
    return replace(
        pooled,
        optim=replace(pooled.optim, schedule=config.get("lr-schedule", "constant")),
        steps=steps,
        workers=0,
        val_every=0,
        checkpoint_every=max(1, steps // 4),
    )


def pooled_steps(scale: Scale, experiment: Experiment) -> int:
    """The federation's compute on one machine: every round's local steps at each of its training sites
    (the sites of a simulation share the machine's cores, so this is also its wall-clock budget)."""
    return scale.rounds * scale.local_steps * int(experiment.settings["sites"])


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
    if experiment.kind == "bench":
        result = row_identity(scale, experiment) | {"results": run_bench(experiment, out)}
    else:
        checkpoint = (run_pooled if experiment.kind == "pooled" else run_federated)(scale, experiment, work)
        result = scored_row(scale, experiment, checkpoint, work)
    result["seconds"] = time.perf_counter() - started
    return result


# -- the suite in resumable parts ------------------------------------------------------------------
BENCH_MINUTES = {"dp_overhead": 3.0, "he_overhead": 5.0, "sites_scaling": 8.0}


def _training_sites(experiment: Experiment) -> int:
    return sum(1 for site in experiment.settings["site-map"].split(",") if not site.startswith("heldout:"))


def work_of(scale: Scale, experiment: Experiment, costs: parts.Costs = parts.COSTS) -> parts.Work:
    """What ``experiment`` costs, unit by unit (see ``simulations/bench/parts.py``)."""
    if experiment.kind == "bench":
        minutes = BENCH_MINUTES.get(experiment.settings["module"], costs.bench)
        return parts.Work(experiment.id, "bench", 1, 1, (minutes * 60,), 0.0, 0.0)
    scoring = _heldout_megapixels(experiment) / costs.megapixels_per_second
    final = scoring + 15.0  # fedseg evaluate: load, score with TTA off, bootstrap the interval
    if experiment.kind == "pooled":
        steps = pooled_steps(scale, experiment)
        chunks = -(-steps // scale.local_steps)
        chunk_seconds = (scale.local_steps * costs.step,) * chunks
        return parts.Work(experiment.id, "steps", steps, scale.local_steps, chunk_seconds, 20.0, final)
    settings = experiment.settings
    factor = costs.step_factor(dp=bool(settings.get("dp-epsilon")), mean_teacher=bool(settings.get("mean-teacher")))
    training = _training_sites(experiment) * scale.local_steps * costs.step * factor
    every = int(scale.run_config.get("evaluate-every", 1))
    rounds = []
    for round_ in range(1, scale.rounds + 1):
        round_seconds = training + costs.round + (costs.he_round if settings.get("he") else 0.0)
        if round_ % every == 0 or round_ == scale.rounds:
            round_seconds += scoring + costs.validation
        rounds.append(round_seconds)
    return parts.Work(experiment.id, "rounds", scale.rounds, 1, tuple(rounds), costs.start, final)


def _heldout_megapixels(experiment: Experiment) -> float:
    heldout = experiment.settings["heldout"].replace("Kvasir-SEG-test", "Kvasir-SEG/test")
    return parts.HELDOUT_MEGAPIXELS.get(heldout, 20.0)


def plan(scale: Scale, tables: list[str] | None = None) -> list[parts.Part]:
    """Every experiment of ``scale`` (of the tables whose names start with one of ``tables``, when given)
    cut into parts of at most ``parts.PLAN_MINUTES`` estimated minutes."""
    chosen = [e for e in all_experiments(scale) if tables is None or e.table.startswith(tuple(tables))]
    return [part for experiment in chosen for part in parts.cut(work_of(scale, experiment))]


def run_part(scale: Scale, part: parts.Part, out: Path) -> bool:
    """Run one part (training stops at ``parts.PART_MINUTES``); returns whether it is now done."""
    experiment = next(e for e in all_experiments(scale) if e.id == part.experiment)
    started = time.monotonic()
    if experiment.kind == "bench":
        result = run_experiment(scale, experiment, out)
        atomic_write_json(out / f"{experiment.id}.json", result)
        return parts.record(out, part, reached=1, seconds=result["seconds"])
    work = out / "work" / experiment.id
    work.mkdir(parents=True, exist_ok=True)
    final = work_of(scale, experiment).final if part.final else 0.0
    stop = parts.Stop(part.last, started + parts.PART_MINUTES * 60 - final)
    if experiment.kind == "pooled":
        reached = parts.train_until(pooled_train_config(scale, experiment, work), stop, chunk=scale.local_steps)
    else:
        reached = parts.simulate_until(federated_run_config(scale, experiment, work), stop)
    if reached >= part.last and part.final:
        write_row(scale, experiment, out, work, seconds=time.monotonic() - started)
    return parts.record(out, part, reached=reached, seconds=time.monotonic() - started)


def write_row(scale: Scale, experiment: Experiment, out: Path, work: Path, *, seconds: float) -> None:
    """The row's JSON: the final model scored on the held-out centre; seconds summed over its parts."""
    checkpoint = work / "run" / "checkpoints" / "last.pt" if experiment.kind == "pooled" else federated_checkpoint(work)
    if checkpoint is None or not checkpoint.exists():
        raise RuntimeError(f"{experiment.id}: the run wrote no model; see {work / 'run'}")
    result = scored_row(scale, experiment, checkpoint, work)
    result["seconds"] = parts.row_seconds(out, experiment.id) + seconds
    atomic_write_json(out / f"{experiment.id}.json", result)


def show_plan(scale: Scale, out: Path, selected: list[str] | None = None) -> int:
    """Print the parts, their estimated minutes and whether each is done; then the totals per table."""
    progress = parts.read_progress(out)
    tables = {e.id: e.table for e in all_experiments(scale)}
    totals: dict[str, list[float]] = {}
    for part in plan(scale, selected):
        finished = parts.is_done(out, part)
        spent = progress.get(part.name, {}).get("seconds")
        state = "done" if finished else (f"{spent / 60:4.1f} min spent" if spent else "")
        print(f"{part.minutes:5.1f} min  {state:>14}  {part.name}")
        total = totals.setdefault(tables[part.experiment], [0.0, 0.0])
        total[0] += part.minutes
        total[1] += 0.0 if finished else part.minutes
    print()
    for table, (minutes, left) in totals.items():
        print(f"{minutes / 60:5.1f} h  ({left / 60:5.1f} h left)  {table}")
    all_minutes, left = sum(t[0] for t in totals.values()), sum(t[1] for t in totals.values())
    print(
        f"{len(plan(scale, selected))} parts, estimated {all_minutes / 60:.1f} hours in all on a quiet 2-core machine "
        f"({left / 60:.1f} hours left); a part stops at {parts.PART_MINUTES:g} minutes whatever it reached"
    )
    return 0


def run_parts(
    scale: Scale,
    out: Path,
    *,
    names: list[str] | None,
    count: int,
    budget_minutes: float | None = None,
    tables: list[str] | None = None,
) -> int:
    """Run the named parts, or the next ``count`` unfinished ones (of ``tables``), each in a process of its
    own; no part starts after ``budget_minutes``."""
    started = time.monotonic()
    pending = [p for p in plan(scale, tables) if not parts.is_done(out, p)]
    chosen = [p for p in plan(scale) if p.name in names] if names else pending[:count]
    unknown = sorted(set(names or []) - {p.name for p in chosen})
    if unknown:
        print(f"no such part: {', '.join(unknown)} (see --plan)")
        return 2
    if not chosen:
        print(f"every part is done; results in {out / 'RESULTS.md'}")
        return 0
    for part in chosen:
        if budget_minutes is not None and time.monotonic() - started >= budget_minutes * 60:
            print(f"--budget-minutes {budget_minutes:g} spent", flush=True)
            break
        if not run_to_the_end(scale, part, out):
            return 1
    left = sum(1 for p in plan(scale, tables) if not parts.is_done(out, p))
    print(f"{left} part(s) left; results in {out / 'RESULTS.md'}")
    return 0


def planned_part(scale: Scale, name: str) -> parts.Part:
    """The part of today's plan named ``name``; a clear error when the plan changed since it was named."""
    found = [p for p in plan(scale) if p.name == name]
    if not found:
        raise SystemExit(
            f"part {name} is not in the {scale.name} profile's plan any more: its rows or costs changed since the "
            "command started (simulations/bench/parts.py). Nothing was lost: see --plan and run the new names"
        )
    return found[0]


def run_to_the_end(scale: Scale, part: parts.Part, out: Path) -> bool:
    """Run ``part`` in a process of its own, again while it stops at the time limit having made progress;
    False when it failed or made none (the run folder's ``flwr-run.log`` says why)."""
    command = self_command(scale, out)
    reached = parts.read_progress(out).get(part.name, {}).get("reached", part.first - 1)
    if parts.is_done(out, part):
        print(f"{part.name}: done already", flush=True)
    while not parts.is_done(out, part):
        print(f"{part.name} (about {part.minutes:.1f} min)", flush=True)
        code = run_child([*command, "--one-part", part.name])
        rewrite_results(scale, out)
        if code != 0:
            print(f"  failed (exit {code}); see the log above", flush=True)
            return False
        before, reached = reached, parts.read_progress(out)[part.name]["reached"]
        if not parts.is_done(out, part) and reached <= before:
            print(f"  made no progress (at {reached}); see {out / 'work' / part.experiment / 'run'}", flush=True)
            return False
        if not parts.is_done(out, part):
            print(f"  stopped at {parts.PART_MINUTES:g} minutes at {reached} of {part.last}; continuing", flush=True)
    return True


def run_child(command: list[str], *, timeout: float | None = None) -> int:
    """Run ``command`` (a part or a row) in a process of its own; its exit code. When this process is asked to
    stop (SIGINT, SIGTERM) or ``timeout`` passes, the child is asked to stop too and given a minute to stop its
    SuperLink and Ray before it is killed: no simulation outlives the suite."""
    process = subprocess.Popen(command, cwd=REPO)
    try:
        return process.wait(timeout=timeout)
    except (Interrupted, subprocess.TimeoutExpired):
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise


def self_command(scale: Scale, out: Path) -> list[str]:
    """This script on ``scale`` (its device too, where ``--device`` changed it) writing to ``out``."""
    command = [sys.executable, "-m", "simulations.bench.run_all", "--profile", scale.name, "--out", str(out)]
    if scale.device != PROFILES[scale.name].device:
        command += ["--device", scale.device]
    return command


def rewrite_results(scale: Scale, out: Path) -> Path:
    """RESULTS.md of ``out``: the rows done, and the rest of the suite as not run yet, in the suite's order."""
    order = [(e.table, e.label) for e in all_experiments(scale)]
    return write_results(out, scale.name, pending=pending_rows(scale, out), order=order)


def pending_rows(scale: Scale, out: Path) -> list[tuple[str, str]]:
    """(table, label) of every row with no result yet, for RESULTS.md's "not run yet"."""
    rows = [(e.table, e.label) for e in all_experiments(scale) if not (out / f"{e.id}.json").exists()]
    return list(dict.fromkeys(rows))


# -- the suite ----------------------------------------------------------------------------------------
def machine_name() -> str:
    if torch.cuda.is_available():
        return _slug(torch.cuda.get_device_name(0))
    return f"cpu-{_slug(platform.machine())}-{__import__('os').cpu_count()}core"


def default_out(scale: Scale) -> Path:
    """Today's folder for this machine and profile, or the one a run in parts started on an earlier day."""
    results = REPO / "simulations" / "results"
    started = sorted(results.glob(f"*-{machine_name()}-{scale.name}/{parts.PROGRESS}"))
    if started:
        return started[-1].parent
    return results / f"{dt.date.today().isoformat()}-{machine_name()}-{scale.name}"


def missing_data() -> bool:
    missing = [str(root) for root in (RETINA, POLYP) if not root.is_dir()]
    if missing:
        print(f"data not found: {', '.join(missing)}; set FEDSEG_SHARED_DATA to the shared data folder")
    return bool(missing)


def run_suite(scale: Scale, out: Path, *, budget_minutes: float | None, only: set[str] | None) -> int:
    experiments = [e for e in all_experiments(scale) if only is None or e.id in only]
    if missing_data():
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
            code = run_child([*self_command(scale, out), "--one", experiment.id], timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  stopped by --budget-minutes; run again to resume {experiment.id}", flush=True)
            break
        if code != 0:
            print(f"  failed (exit {code}); see the log above", flush=True)
            failed.append(experiment.id)
        rewrite_results(scale, out)
    remaining = [e.id for e in experiments if not (out / f"{e.id}.json").exists()]
    rewrite_results(scale, out)
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
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None, help="quick, cpu or full (default)")
    parser.add_argument("--quick", action="store_true", help="the smoke test: --profile quick")
    parser.add_argument("--scale", choices=sorted(PROFILES), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--device", default=None, help="train and score on this device instead of the profile's (e.g. cuda)"
    )
    parser.add_argument("--plan", action="store_true", help="the parts, their estimated minutes, what is done")
    parser.add_argument("--next", type=int, nargs="?", const=1, default=None, metavar="N", help="run the next N parts")
    parser.add_argument("--part", default=None, help="comma-separated part names (see --plan) to run")
    parser.add_argument(
        "--tables", default=None, help="--plan/--next: only tables starting with these (comma-separated), e.g. cost"
    )
    parser.add_argument("--budget-minutes", type=float, default=None, help="stop after this long; run again to resume")
    parser.add_argument("--only", default=None, help="comma-separated experiment ids")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-part", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    scale = PROFILES[args.profile or args.scale or ("quick" if args.quick else "full")]
    if args.device:
        scale = replace(scale, device=args.device)
    out = (args.out or default_out(scale)).resolve()  # runs resume whatever folder the command is typed in
    out.mkdir(parents=True, exist_ok=True)
    if args.one:
        experiment = next(e for e in all_experiments(scale) if e.id == args.one)
        atomic_write_json(out / f"{experiment.id}.json", run_experiment(scale, experiment, out))
        return 0
    if args.one_part:
        run_part(scale, planned_part(scale, args.one_part), out)
        return 0
    if args.list:
        for experiment in all_experiments(scale):
            done = "done" if (out / f"{experiment.id}.json").exists() else "    "
            print(f"{done}  {experiment.id}")
        return 0
    tables = args.tables.split(",") if args.tables else None
    if args.plan:
        return show_plan(scale, out, tables)
    every_part = scale.name == CPU.name and not args.only  # the cpu profile runs in parts only
    if args.next is not None or args.part or every_part:
        if missing_data():
            return 2
        names = args.part.split(",") if args.part else None
        count = len(plan(scale)) if args.next is None else args.next
        return run_parts(scale, out, names=names, count=count, budget_minutes=args.budget_minutes, tables=tables)
    only = set(args.only.split(",")) if args.only else None
    return run_suite(scale, out, budget_minutes=args.budget_minutes, only=only)


if __name__ == "__main__":
    with stop_on_signals():  # SIGINT/SIGTERM: a running simulation stops its SuperLink and Ray first
        try:
            code = main()
        except Interrupted as stop:
            print(f"run_all: {stop}; run the same command again to resume", file=sys.stderr)
            code = stop.exit_code
    sys.exit(code)
