"""Time to a useful model: wall minutes until the held-out CHASE_DB1 Dice first reaches a target.

    python -m simulations.bench.time_to_dice pooled --out DIR          # STARE + AV-WIDE pooled
    python -m simulations.bench.time_to_dice federated --out DIR       # the same as a 2-site FedAvg simulation

The held-out centre is scored at full resolution (sliding windows, threshold 0.5) on a fixed
schedule: every ``--score-every`` steps in pooled training, after every round in the federation.
Pooled: the clock counts training only (the benchmark's own scoring is paused out of it, and
reported apart). Federated: the clock is the simulation's wall time from launch, everything
included (start-up, training, aggregation and the federation's own held-out scoring), since
that is what a user waits for. Each run stops at ``--cap-minutes`` and reports the best Dice
reached. Writes ``time-to-dice-<mode>.json`` and a learning-curve PNG into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.layout import scan_centre
from fedseg.data.splits import SplitConfig
from fedseg.evaluation.scoring import score_records
from fedseg.files import read_jsonl
from fedseg.inference.predictor import Predictor
from fedseg.inference.sliding_window import TilingConfig
from fedseg.models import ModelConfig
from fedseg.models.state import unwrap
from fedseg.plotting import plt, save_figure
from fedseg.training.config import OptimConfig, TrainConfig
from fedseg.training.pooled import PooledTrainer
from simulations.bench.common import write_result

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "retina"
TRAIN_CENTRES = ("STARE", "AV-WIDE")
HELD_OUT = "CHASE_DB1"


@dataclass(frozen=True)
class CurvePoint:
    step: int
    minutes: float
    dice: float


def first_reaching(curve: list[CurvePoint], target: float) -> CurvePoint | None:
    return next((point for point in curve if point.dice >= target), None)


# -- pooled -----------------------------------------------------------------------------------------
def pooled_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(
            root=args.data,
            centres=TRAIN_CENTRES,
            crop=CropConfig(size=args.crop_size),
            split=SplitConfig(seed=args.seed, val_fraction=0.15),
        ),
        out=args.out / "work" / "pooled",
        model=ModelConfig(options=json.loads(args.model_options)),
        optim=OptimConfig(lr=args.lr, schedule=args.schedule),
        tiling=TilingConfig(tile_size=args.tile_size, overlap=args.overlap),
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        device="cpu",
        workers=0,
        val_every=0,
        checkpoint_every=args.steps,
    )


def heldout_scorer(args: argparse.Namespace, config: TrainConfig) -> Callable[[nn.Module], float]:
    records = scan_centre(args.data, HELD_OUT)

    def score(model: nn.Module) -> float:
        predictor = Predictor(
            unwrap(model), config.preprocessing(volumes=False), config.tiling, tta=False, device=torch.device("cpu")
        )
        result = score_records(predictor, records, threshold=0.5, with_hd95=False, progress=False)
        model.train()
        return float(result.counts.summary()["dice"])

    return score


def run_pooled(args: argparse.Namespace) -> dict:
    config = pooled_config(args)
    trainer = PooledTrainer(config, resume=False, progress=False).trainer
    score = heldout_scorer(args, config)
    curve: list[CurvePoint] = []
    training, scoring = 0.0, 0.0
    while trainer.state.step < config.steps and training < args.cap_minutes * 60:
        started = time.perf_counter()
        trainer.run(min(args.score_every, config.steps - trainer.state.step))
        training += time.perf_counter() - started
        started = time.perf_counter()
        dice = score(trainer.student)
        scoring += time.perf_counter() - started
        curve.append(CurvePoint(trainer.state.step, training / 60, dice))
        print(f"step {trainer.state.step}: {training / 60:.1f} min, held-out {HELD_OUT} Dice {dice:.4f}", flush=True)
        if args.stop_at_target and dice >= args.target:
            break
    return {
        "curve": [asdict(p) for p in curve],
        "seconds_per_step": training / max(trainer.state.step, 1),
        "scoring_seconds_per_evaluation": scoring / max(len(curve), 1),
    }


# -- federated --------------------------------------------------------------------------------------
def federated_config(args: argparse.Namespace) -> dict:
    return {
        "experiment": "time-to-dice",
        "site-map": f"{','.join(TRAIN_CENTRES)},heldout:{HELD_OUT}",
        "data-root": str(args.data),
        "out": str(args.out / "work" / "federated"),
        "resume": False,
        "num-server-rounds": args.rounds,
        "local-steps": args.local_steps,
        "evaluate-every": args.evaluate_every,
        "batch-size": args.batch_size,
        "crop-size": args.crop_size,
        "lr": args.lr,
        "lr-schedule": args.schedule,
        "tile-size": args.tile_size,
        "overlap": args.overlap,
        "model-options": args.model_options,
        "seed": args.seed,
        "device": "cpu",
    }


def watch_rounds(path: Path, started: float, curve: list[CurvePoint], done: threading.Event, local_steps: int) -> None:
    """Record each round's held-out Dice with the wall time at which its line appeared."""
    seen, finished = 0, False
    while not finished:
        finished = done.wait(1.0)
        if not path.exists():
            continue
        rounds = read_jsonl(path)
        for record in rounds[seen:]:
            dice = record.get("heldout", {}).get(HELD_OUT, {}).get("dice")
            if dice is not None:
                minutes = (time.monotonic() - started) / 60
                curve.append(CurvePoint(record["round"] * local_steps, minutes, float(dice)))
                print(f"round {record['round']}: {minutes:.1f} min, held-out {HELD_OUT} Dice {dice:.4f}", flush=True)
        seen = len(rounds)


def run_federated(args: argparse.Namespace) -> dict:
    import shutil

    from simulations.launch import simulate

    config = federated_config(args)
    shutil.rmtree(config["out"], ignore_errors=True)
    rounds_file = Path(config["out"]) / "rounds.jsonl"
    curve: list[CurvePoint] = []
    done = threading.Event()
    started = time.monotonic()
    watcher = threading.Thread(target=watch_rounds, args=(rounds_file, started, curve, done, args.local_steps))
    watcher.start()
    try:
        simulate(config, quiet=True, timeout=args.cap_minutes * 60)
    except subprocess.TimeoutExpired:
        print(f"stopped at the cap of {args.cap_minutes:g} minutes", flush=True)
    finally:
        done.set()
        watcher.join()
    records = read_jsonl(rounds_file) if rounds_file.exists() else []
    return {
        "curve": [asdict(p) for p in curve],
        "round_seconds": [r.get("seconds") for r in records],
        "site_train_seconds": [{s: m.get("seconds") for s, m in r.get("train", {}).items()} for r in records],
    }


# -- report -----------------------------------------------------------------------------------------
def plot(curve: list[CurvePoint], target: float, title: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([p.minutes for p in curve], [p.dice for p in curve], marker="o")
    axis.axhline(target, color="grey", linestyle="--", label=f"target {target:.2f}")
    axis.set(xlabel="wall minutes (2 CPU cores)", ylabel=f"held-out {HELD_OUT} Dice", title=title, ylim=(0, 1))
    axis.legend()
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("pooled", "federated"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED, help="retina data root (default: ../shared/data/retina)")
    parser.add_argument("--target", type=float, default=0.70)
    parser.add_argument("--cap-minutes", type=float, default=25.0)
    parser.add_argument("--stop-at-target", action="store_true")
    parser.add_argument("--steps", type=int, default=1500, help="pooled: steps of the learning-rate schedule")
    parser.add_argument("--score-every", type=int, default=150, help="pooled: steps between held-out scorings")
    parser.add_argument("--rounds", type=int, default=12, help="federated: rounds")
    parser.add_argument("--local-steps", type=int, default=60, help="federated: steps per site and round")
    parser.add_argument("--evaluate-every", type=int, default=1, help="federated: rounds between held-out scorings")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--schedule", default="onecycle")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--model-options", default="{}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out = args.out.resolve()
    if not (args.data / HELD_OUT).is_dir():
        raise SystemExit(f"{args.data}: no {HELD_OUT} folder; pass --data ROOT of the retinal centres")
    result = run_pooled(args) if args.mode == "pooled" else run_federated(args)
    curve = [CurvePoint(**p) for p in result["curve"]]
    reached = first_reaching(curve, args.target)
    result.update(
        target=args.target,
        minutes_to_target=reached.minutes if reached else None,
        best_dice=max((p.dice for p in curve), default=None),
    )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_result(args.out / f"time-to-dice-{args.mode}.json", f"time_to_dice_{args.mode}", result, **settings)
    plot(
        curve,
        args.target,
        f"{args.mode}: STARE + AV-WIDE, held out {HELD_OUT}",
        args.out / f"time-to-dice-{args.mode}.png",
    )


if __name__ == "__main__":
    main()
