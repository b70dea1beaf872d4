"""Does Mean Teacher help with few labels? Supervised-only against Mean Teacher on the same labels,
scored on a held-out centre that neither saw: a synthetic one, or real retinal centres with --data.

    python -m simulations.bench.mean_teacher_gain --out mt_gain.json            # synthetic, CPU, ~15 min
    python -m simulations.bench.mean_teacher_gain --steps 3000 --device cuda   # GPU
    python -m simulations.bench.mean_teacher_gain --data ../shared/data/retina --centres STARE,AV-WIDE \\
        --held-out CHASE_DB1 --label-fraction 0.25 --crop 256 --out mt_retina.json

Both runs use the same centres, the same labelled images (same manifest seed), the same steps,
batch and model; Mean Teacher also trains on the unlabelled rest through consistency. For a fair
comparison supervised-only trains on the same input perturbations as the Mean Teacher student
(noise, flips, jitter: ``perturb_inputs``; ``--clean-supervised`` turns that off). Each run is
validated at its end and releases the better of student and teacher (``best.pt``); the held-out
centre scores the released model, the student and (Mean Teacher) the teacher. Fixed steps, never a
wall-clock budget.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.splits import SplitConfig
from fedseg.data.synth import SynthConfig, generate
from fedseg.evaluation.evaluate import EvaluateConfig, evaluate
from fedseg.models import ModelConfig
from fedseg.models.checkpoint import load_checkpoint
from fedseg.training.config import TrainConfig
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.training.pooled import TrainResult, train
from simulations.bench.common import write_result

SYNTH_CENTRES, SYNTH_HELD_OUT = ("centre-01", "centre-02", "centre-03"), "centre-04"


def mean_teacher_config(args: argparse.Namespace) -> MeanTeacherConfig:
    return MeanTeacherConfig(
        rampup_steps=args.steps // 4,
        consistency_weight=args.consistency_weight,
        ema_decay=args.ema_decay,
        student_jitter=args.student_jitter,
        unlabelled_ratio=args.unlabelled_ratio,
    )


def variant_name(args: argparse.Namespace, mean_teacher: bool) -> str:
    if mean_teacher:
        name = (
            f"mean-teacher-w{args.consistency_weight:g}-ema{args.ema_decay:g}"
            f"-jitter{args.student_jitter:g}-ratio{args.unlabelled_ratio:g}"
        )
    else:
        name = "supervised-only" + ("" if args.clean_supervised else f"-perturbed-jitter{args.student_jitter:g}")
    return f"{name}-seed{args.seed}"


def train_config(args: argparse.Namespace, data: Path, centres: tuple[str, ...], mean_teacher: bool) -> TrainConfig:
    perturbation = mean_teacher_config(args).student_perturbation
    return TrainConfig(
        data=DataConfig(
            root=data,
            centres=centres,
            crop=CropConfig(size=args.crop),
            split=SplitConfig(seed=args.seed, val_fraction=0.1, label_fraction=args.label_fraction),
        ),
        out=args.work / variant_name(args, mean_teacher),
        model=ModelConfig(name="unet", options={"widths": [8, 16, 32, 64], "aspp_rates": [1, 2, 3]}),
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        workers=0,
        val_every=args.steps,
        checkpoint_every=args.steps,
        mean_teacher=mean_teacher_config(args) if mean_teacher else None,
        perturb_inputs=None if mean_teacher or args.clean_supervised else perturbation,
    )


def heldout_dice(args: argparse.Namespace, checkpoint: Path, data: Path, held_out: str, name: str) -> dict:
    report = evaluate(
        EvaluateConfig(
            checkpoint=checkpoint,
            data=data,
            centres=(held_out,),
            out=args.work / name,
            device=args.device,
            examples=False,
        )
    )
    metrics = report.metrics["centres"][held_out]
    return {"dice": metrics["dice"], "dice_ci95": metrics["dice_ci95"]}


def run_variant(args: argparse.Namespace, data: Path, centres: tuple[str, ...], held_out: str, mt: bool) -> dict:
    config = train_config(args, data, centres, mt)
    result: TrainResult = train(config, resume=(config.out / "checkpoints" / "resume.pt").exists(), progress=False)
    name = variant_name(args, mt)
    released = result.best_checkpoint or result.last_checkpoint
    scores = {"released": heldout_dice(args, released, data, held_out, f"{name}-heldout")}
    scores["student"] = heldout_dice(args, result.last_checkpoint, data, held_out, f"{name}-heldout-student")
    if result.teacher_checkpoint is not None:
        scores["teacher"] = heldout_dice(args, result.teacher_checkpoint, data, held_out, f"{name}-heldout-teacher")
    return {
        "variant": name,
        "released_weights": load_checkpoint(released).meta.get("weights", "student"),
        "val_dice": result.best_val_dice,
        "heldout_dice": scores["released"]["dice"],
        "heldout_dice_ci95": scores["released"]["dice_ci95"],
        "heldout": scores,
        "steps": args.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-mean-teacher"))
    parser.add_argument("--data", type=Path, default=None, help="real centres' root (default: synthetic centres)")
    parser.add_argument("--centres", default=None, help="with --data: training centres, comma-separated")
    parser.add_argument("--held-out", default=None, help="with --data: the held-out centre")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=40, help="images per synthetic centre")
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--consistency-weight", type=float, default=MeanTeacherConfig.consistency_weight)
    parser.add_argument("--ema-decay", type=float, default=MeanTeacherConfig.ema_decay)
    parser.add_argument("--student-jitter", type=float, default=MeanTeacherConfig.student_jitter)
    parser.add_argument("--unlabelled-ratio", type=float, default=MeanTeacherConfig.unlabelled_ratio)
    parser.add_argument("--clean-supervised", action="store_true", help="supervised-only without perturbed inputs")
    parser.add_argument("--only", choices=("supervised", "mean-teacher"), default=None, help="run one arm only")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.data is None:
        data, centres, held_out = args.work / "data", SYNTH_CENTRES, SYNTH_HELD_OUT
        if not (data / "synth.json").exists():
            generate(SynthConfig(out=data, centres=4, images=args.images, size=256, seed=args.seed))
    else:
        if not args.centres or not args.held_out:
            parser.error("--data needs --centres and --held-out")
        data, centres, held_out = args.data, tuple(args.centres.split(",")), args.held_out
    arms = {"supervised": False, "mean-teacher": True}
    results = [
        run_variant(args, data, centres, held_out, flag) for arm, flag in arms.items() if args.only in (None, arm)
    ]
    write_result(
        args.out,
        "mean_teacher_gain",
        results,
        data=str(data),
        centres=list(centres),
        held_out=held_out,
        images_per_centre=args.images if args.data is None else None,
        label_fraction=args.label_fraction,
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        supervised_inputs="clean" if args.clean_supervised else "perturbed like the Mean Teacher student",
    )


if __name__ == "__main__":
    main()
