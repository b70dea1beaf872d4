"""Does Mean Teacher help with few labels? Supervised-only against Mean Teacher on the same labels,
scored on a synthetic centre that neither saw.

    python -m simulations.bench.mean_teacher_gain --out mt_gain.json            # CPU, ~15 min
    python -m simulations.bench.mean_teacher_gain --steps 3000 --device cuda   # GPU

Both runs use the same synthetic centres, the same 10 % of labelled images (same manifest seed),
the same steps, batch and model; Mean Teacher also trains on the other 90 % through consistency.
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
from fedseg.training.config import TrainConfig
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.training.pooled import train
from simulations.bench.common import write_result


def run_variant(args: argparse.Namespace, data: Path, held_out: str, mean_teacher: bool) -> dict:
    name = (
        f"mean-teacher-w{args.consistency_weight:g}-ema{args.ema_decay:g}"
        f"-jitter{args.student_jitter:g}-ratio{args.unlabelled_ratio:g}"
        if mean_teacher
        else "supervised-only"
    ) + f"-seed{args.seed}"
    config = TrainConfig(
        data=DataConfig(
            root=data,
            centres=("centre-01", "centre-02", "centre-03"),
            crop=CropConfig(size=args.crop),
            split=SplitConfig(seed=args.seed, val_fraction=0.1, label_fraction=args.label_fraction),
        ),
        out=args.work / name,
        model=ModelConfig(name="unet", options={"widths": [8, 16, 32, 64], "aspp_rates": [1, 2, 3]}),
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        workers=0,
        val_every=0,
        checkpoint_every=args.steps,
        mean_teacher=MeanTeacherConfig(
            rampup_steps=args.steps // 4,
            consistency_weight=args.consistency_weight,
            ema_decay=args.ema_decay,
            student_jitter=args.student_jitter,
            unlabelled_ratio=args.unlabelled_ratio,
        )
        if mean_teacher
        else None,
    )
    result = train(config, resume=(config.out / "checkpoints" / "resume.pt").exists())
    report = evaluate(
        EvaluateConfig(
            checkpoint=result.last_checkpoint,
            data=data,
            centres=(held_out,),
            out=args.work / f"{name}-heldout",
            device=args.device,
            examples=False,
        )
    )
    metrics = report.metrics["centres"][held_out]
    return {
        "variant": name,
        "heldout_dice": metrics["dice"],
        "heldout_dice_ci95": metrics["dice_ci95"],
        "steps": args.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-mean-teacher"))
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
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data = args.work / "data"
    if not (data / "synth.json").exists():
        generate(SynthConfig(out=data, centres=4, images=args.images, size=256, seed=args.seed))
    results = [run_variant(args, data, "centre-04", mean_teacher=flag) for flag in (False, True)]
    write_result(
        args.out,
        "mean_teacher_gain",
        results,
        images_per_centre=args.images,
        label_fraction=args.label_fraction,
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
    )


if __name__ == "__main__":
    main()
