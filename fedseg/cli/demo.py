"""``fedseg demo``: synthetic centres, brief pooled training on three, Dice on every centre."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.cli.common import add_device
from fedseg.cli.evaluate import format_table
from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.synth import SynthConfig, generate
from fedseg.evaluation.evaluate import EvaluateConfig, evaluate
from fedseg.models import ModelConfig
from fedseg.training.config import TrainConfig
from fedseg.training.pooled import train

DEMO_MODEL = ModelConfig(name="unet", options={"widths": [8, 16, 32, 64], "aspp_rates": [1, 2, 3]})


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="synthetic centres, brief pooled training, Dice per centre")
    parser.add_argument("--out", type=Path, default=Path("demo-runs/pooled"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    data_root = args.out / "data"
    appearances = generate(SynthConfig(out=data_root, centres=4, images=12, size=256, seed=args.seed))
    names = [a.name for a in appearances]
    training, held_out = tuple(names[:3]), names[3]
    config = TrainConfig(
        data=DataConfig(root=data_root, centres=training, crop=CropConfig(size=128)),
        out=args.out / "run",
        model=DEMO_MODEL,
        steps=args.steps,
        batch_size=8,
        seed=args.seed,
        device=args.device,
        workers=0,
        val_every=0,
        checkpoint_every=100,
    )
    result = train(config, resume=(config.out / "checkpoints" / "resume.pt").exists())
    report = evaluate(
        EvaluateConfig(
            checkpoint=result.last_checkpoint,
            data=data_root,
            centres=tuple(names),
            out=args.out / "evaluation",
            device=args.device,
        )
    )
    print(f"\ntrained on {', '.join(training)}; {held_out} was held out")
    print(format_table(report.metrics))
    return 0
