"""DoubleU-Net against fedseg's U-Net on polyp-sites (Kvasir-SEG as 4 sites, its test split held out),
at equal training CPU time.

    nice -n 15 python -m simulations.bench.doubleunet_vs_unet --out simulations/results/DATE-MACHINE-doubleunet

Both models train the same federation (same rounds, sites, batch, crop, learning rate, seed). The
U-Net gets ``--unet-local-steps`` per round; DoubleU-Net gets as many local steps as fit in the same
CPU time, from a calibration of each model's CPU seconds per training step (process time, one
thread, the minimum over steps taken in turn, so other work on the machine does not bias it;
kept in ``calibration.json``). Each finished model is kept in ``<model>.json`` and not run again.
Both final global models are scored with ``fedseg evaluate`` on the held-out Kvasir-SEG test split
at full resolution.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from fedseg.files import atomic_write_json
from fedseg.losses import FocalDiceLoss
from fedseg.models import create_model
from simulations.bench.common import machine
from simulations.bench.run_all import POLYP, QUICK, Experiment, Scale, run_federated, score

SITES = "Kvasir-SEG/1-of-4,Kvasir-SEG/2-of-4,Kvasir-SEG/3-of-4,Kvasir-SEG/4-of-4,heldout:Kvasir-SEG/test"
UNET_OPTIONS: dict[str, Any] = {}  # the zoo default (1.03 M parameters)
# DoubleU-Net at a quarter of the paper's widths (1.8 M parameters instead of 29.3 M): a CPU budget
# gives the paper-sized network only a handful of steps.
DOUBLEUNET_OPTIONS = {
    "vgg_widths": [16, 32, 64, 128, 128],
    "widths": [8, 16, 32, 64],
    "aspp_channels": 32,
}


def training_step(name: str, options: dict[str, Any], *, batch: int, crop: int) -> Callable[[], None]:
    """One Adam step (forward, Focal + Dice, backward) of a fresh model on a fixed random batch."""
    torch.manual_seed(0)
    model = create_model(name, **options).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = FocalDiceLoss()
    x, y = torch.randn(batch, 3, crop, crop), (torch.rand(batch, 1, crop, crop) > 0.8).float()

    def step() -> None:
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()

    return step


def cpu_seconds_per_step(models: dict[str, dict[str, Any]], *, batch: int, crop: int, repeats: int = 5) -> dict:
    """Process CPU seconds of one training step per model, on one thread: the minimum over ``repeats``
    steps taken in turn (other load on the machine only ever adds time, and hits every model alike)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        steps = {name: training_step(name, options, batch=batch, crop=crop) for name, options in models.items()}
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(repeats + 1):  # the first round is a warm-up
            for name, step in steps.items():
                started = time.process_time()
                step()
                times[name].append(time.process_time() - started)
        return {name: min(values[1:]) for name, values in times.items()}
    finally:
        torch.set_num_threads(threads)


def run_model(scale: Scale, name: str, options: dict[str, Any], out: Path) -> dict[str, Any]:
    experiment = Experiment(
        f"polyp-sites--{name}",
        "doubleunet",
        "federated",
        {
            "task": "polyp",
            "heldout": "Kvasir-SEG/test",
            "site-map": SITES,
            "model": name,
            "evaluate-every": scale.rounds,
        },
        name,
    )
    work = out / "work" / experiment.id
    started = time.perf_counter()
    checkpoint = run_federated(scale, experiment, work)
    trained = time.perf_counter() - started
    return {
        "model": name,
        "options": options,
        "parameters": sum(p.numel() for p in create_model(name, **options).parameters()),
        "local_steps": scale.local_steps,
        "federated_wall_seconds": trained,
        "heldout": score(scale, experiment, checkpoint, work),
    }


def run_pooled(name: str, options: dict[str, Any], steps: int, args: argparse.Namespace) -> dict[str, Any]:
    """Pooled training on polyp-sites' training images (val 0, test 0.1: the same held-out split)."""
    from fedseg.data.augment import AugmentConfig
    from fedseg.data.config import DataConfig
    from fedseg.data.crops import CropConfig
    from fedseg.data.splits import SplitConfig
    from fedseg.inference.sliding_window import TilingConfig
    from fedseg.models import ModelConfig
    from fedseg.training.config import OptimConfig, TrainConfig
    from fedseg.training.pooled import train

    work = args.out / "work" / f"pooled--{name}"
    data = DataConfig(
        root=POLYP,
        centres=("Kvasir-SEG",),
        resize=args.resize,
        crop=CropConfig(size=args.crop_size),
        augment=AugmentConfig.preset("strong"),
        split=SplitConfig(seed=0, val_fraction=0.0, test_fraction=0.1),
    )
    config = TrainConfig(
        data=data,
        out=work / "run",
        model=ModelConfig(name=name, options=options),
        optim=OptimConfig(lr=0.002, schedule="constant"),
        tiling=TilingConfig(tile_size=2 * args.crop_size),
        steps=steps,
        batch_size=args.batch_size,
        device="cpu",
        workers=0,
        val_every=0,
        checkpoint_every=steps,
    )
    started = time.perf_counter()
    checkpoint = train(config, progress=False, tracking="none").last_checkpoint
    trained = time.perf_counter() - started
    experiment = Experiment(
        f"pooled--{name}", "doubleunet", "pooled", {"task": "polyp", "heldout": "Kvasir-SEG/test"}, name
    )
    scale = replace(QUICK, crop_size=args.crop_size, device="cpu")
    return {
        "model": name,
        "options": options,
        "parameters": sum(p.numel() for p in create_model(name, **options).parameters()),
        "pooled_steps": steps,
        "train_wall_seconds": trained,
        "heldout": score(scale, experiment, checkpoint, work),
    }


def pooled_comparison(args: argparse.Namespace, costs: dict[str, float]) -> int:
    steps = {
        "unet": args.pooled_steps,
        "doubleunet": max(1, round(args.pooled_steps * costs["unet"] / costs["doubleunet"])),
    }
    results = []
    for name, options in (("unet", UNET_OPTIONS), ("doubleunet", DOUBLEUNET_OPTIONS)):
        done = args.out / f"pooled-{name}.json"
        if not done.exists():
            atomic_write_json(
                done, {**run_pooled(name, options, steps[name], args), "cpu_seconds_per_step": costs[name]}
            )
        results.append(json.loads(done.read_text()))
        print(json.dumps(results[-1], indent=2), flush=True)
    payload = {
        "benchmark": "doubleunet_vs_unet (pooled)",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
        "settings": vars(args) | {"out": str(args.out)},
        "results": results,
    }
    atomic_write_json(args.out / "doubleunet_vs_unet_pooled.json", payload)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--unet-local-steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--resize", type=int, default=192, help="longer image side at load (Kvasir is ~600 px)")
    parser.add_argument(
        "--pooled-steps",
        type=int,
        default=0,
        help="instead of the federation: pooled training on its training images, U-Net this many steps",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    calibration = args.out / "calibration.json"
    if not calibration.exists():
        models = {"unet": UNET_OPTIONS, "doubleunet": DOUBLEUNET_OPTIONS}
        atomic_write_json(calibration, cpu_seconds_per_step(models, batch=args.batch_size, crop=args.crop_size))
    costs = json.loads(calibration.read_text())
    if args.pooled_steps:
        return pooled_comparison(args, costs)
    doubleunet_steps = max(1, round(args.unet_local_steps * costs["unet"] / costs["doubleunet"]))
    base = replace(
        QUICK,
        name="doubleunet-vs-unet",
        rounds=args.rounds,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        polyp_resize=args.resize,
        device="cpu",
    )
    results = []
    for name, options, steps in (
        ("unet", UNET_OPTIONS, args.unet_local_steps),
        ("doubleunet", DOUBLEUNET_OPTIONS, doubleunet_steps),
    ):
        done = args.out / f"{name}.json"  # a finished model is not run again
        if not done.exists():
            scale = replace(base, local_steps=steps, model_options=json.dumps(options))
            atomic_write_json(done, {**run_model(scale, name, options, args.out), "cpu_seconds_per_step": costs[name]})
        results.append(json.loads(done.read_text()))
        print(json.dumps(results[-1], indent=2), flush=True)
    payload = {
        "benchmark": "doubleunet_vs_unet",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
        "settings": vars(args) | {"out": str(args.out), "sites": SITES},
        "results": results,
    }
    atomic_write_json(args.out / "doubleunet_vs_unet.json", payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
