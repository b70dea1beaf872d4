"""DP-SGD against non-DP training, from random init and from a public prior, at a fixed number of steps.

    python -m simulations.bench.dp_from_prior --task retina --out simulations/results/DATE-MACHINE-dp-prior
    python -m simulations.bench.dp_from_prior --task polyp --out ...

Issue 13's goal is that DP at epsilon 8 keeps >= 85 % of the non-DP held-out Dice of the same
configuration. Every arm trains pooled with ``fedseg train`` for ``--steps`` steps (the same
steps, model, crops and batch), and the final checkpoint is scored on the held-out images with
``fedseg evaluate``: retina trains on STARE + AV-WIDE and holds out CHASE_DB1; polyp trains on
Kvasir-SEG and holds out its test split (``--test-fraction``). The prior is made once with
``fedseg prior`` (generated images only: vessels for retina, blobs for polyp). Arms are run with
``--arms`` (default: every arm); each finished arm is kept in ``<arm>.json`` and not run again, so the
command resumes. Steps, not wall-clock time, make the arms comparable on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedseg.files import atomic_write_json
from simulations.bench.common import machine
from simulations.bench.run_all import POLYP, RETINA

MODEL_OPTIONS = ("widths=[8,16,32,64]", "aspp_rates=[1,2,3]")


@dataclass(frozen=True)
class Task:
    data: Path
    train: str
    heldout: str
    prior_kind: str
    train_flags: tuple[str, ...] = ()

    def evaluate_flags(self, run: Path) -> list[str]:
        if self.heldout == "test":  # the held-out test split of the training run's own data
            return ["--centres", self.train, "--manifest", str(run / "manifest.json"), "--split", "test"]
        return ["--centres", self.heldout]


TASKS = {
    "retina": Task(RETINA, "STARE,AV-WIDE", "CHASE_DB1", "vessels"),
    "polyp": Task(POLYP, "Kvasir-SEG", "test", "blobs", ("--resize", "256", "--test-fraction", "0.2")),
}


def fedseg(*args: str) -> None:
    command = [sys.executable, "-m", "fedseg", *args]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def arm_flags(arm: str, prior: Path) -> list[str]:
    """``<init>-<privacy>``: init ``random`` or ``prior``, privacy ``nodp`` or ``dp<epsilon>``."""
    init, _, privacy = arm.partition("-")
    flags = ["--init", str(prior)] if init == "prior" else []
    if privacy.startswith("dp"):
        flags += ["--dp-epsilon", privacy.removeprefix("dp")]
    return flags


def run_arm(arm: str, task: Task, args: argparse.Namespace, prior: Path) -> dict[str, Any]:
    run = args.out / "work" / args.task / arm
    options = [f"--model-option={option}" for option in MODEL_OPTIONS]
    fedseg(
        "train", "--data", str(task.data), "--centres", task.train, "--out", str(run), *options,
        "--crop-size", str(args.crop_size), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
        "--seed", str(args.seed), "--val-every", "0", "--checkpoint-every", str(args.steps), "--workers", "0",
        "--tracking", "none", "--device", "cpu", *task.train_flags, *arm_flags(arm, prior),
    )  # fmt: skip
    return score(run / "checkpoints" / "last.pt", task, run, args.out / "work" / args.task / f"eval-{arm}")


def score(checkpoint: Path, task: Task, run: Path, out: Path) -> dict[str, Any]:
    fedseg("evaluate", "--checkpoint", str(checkpoint), "--data", str(task.data), *task.evaluate_flags(run),
           "--out", str(out), "--device", "cpu")  # fmt: skip
    centres = json.loads((out / "metrics.json").read_text())["centres"]
    return {name: {k: v[k] for k in ("n_images", "dice", "dice_ci95")} for name, v in centres.items()}


def make_prior(task: Task, args: argparse.Namespace) -> Path:
    folder = args.out / "work" / args.task / "prior"
    if not (folder / "prior.pt").exists():
        options = [f"--model-option={option}" for option in MODEL_OPTIONS]
        fedseg("prior", "--out", str(folder), "--kind", task.prior_kind, "--crop-size", str(args.crop_size),
               "--batch-size", str(args.batch_size), "--steps", str(args.prior_steps), "--seed", str(args.seed),
               "--device", "cpu", *options)  # fmt: skip
    return folder / "prior.pt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arms", default="random-nodp,random-dp8,prior-nodp,prior-dp8,prior-dp3")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--prior-steps", type=int, default=400)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task = TASKS[args.task]
    prior = make_prior(task, args)
    results: dict[str, Any] = {}
    arms = args.arms.split(",")
    for arm in arms:
        path = args.out / f"{args.task}-{arm}.json"
        if not path.exists():
            atomic_write_json(path, run_arm(arm, task, args, prior))
        results[arm] = json.loads(path.read_text())
    prior_file = args.out / f"{args.task}-prior-alone.json"
    if not prior_file.exists():  # scored on the same held-out images (a run's manifest names polyp's test split)
        run = args.out / "work" / args.task / arms[0]
        atomic_write_json(prior_file, score(prior, task, run, args.out / "work" / args.task / "eval-prior"))
    results["prior-alone"] = json.loads(prior_file.read_text())
    summary = {"benchmark": "dp_from_prior", "machine": machine(), "settings": vars(args) | {"out": str(args.out)},
               "held_out_dice": results}  # fmt: skip
    atomic_write_json(args.out / f"{args.task}.json", summary)
    for arm, centres in results.items():
        print(arm, {c: round(v["dice"], 3) for c, v in centres.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
