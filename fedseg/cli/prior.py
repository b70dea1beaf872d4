"""``fedseg prior``: a public prior, pre-trained on images fedseg generates itself (no real data, no privacy cost)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.cli.common import add_device, key_value, positive_int
from fedseg.data.synth import KINDS
from fedseg.models import ModelConfig, available_models
from fedseg.training.prior import PriorConfig, build_prior


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "prior", help="pre-train a public prior on generated images (start DP training from it with --init)"
    )
    parser.add_argument("--out", type=Path, required=True, help="prior folder: prior.pt is written there")
    parser.add_argument("--kind", choices=KINDS, default="both", help="structures drawn: vessels, blobs or both")
    parser.add_argument("--styles", type=positive_int, default=PriorConfig.styles, help="looks drawn (default: 24)")
    parser.add_argument("--images", type=positive_int, default=PriorConfig.images, help="images per look (default: 4)")
    parser.add_argument("--size", type=int, default=PriorConfig.size, help="image side in pixels (default: 512)")
    parser.add_argument("--steps", type=positive_int, default=PriorConfig.steps, help="training steps (default: 600)")
    parser.add_argument("--batch-size", type=positive_int, default=PriorConfig.batch_size)
    parser.add_argument("--crop-size", type=int, default=PriorConfig.crop_size)
    parser.add_argument("--lr", type=float, default=PriorConfig.lr)
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="input channels of the model")
    parser.add_argument("--model", choices=available_models(), default="unet")
    parser.add_argument(
        "--model-option",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="model option, as for fedseg train (the run that starts from the prior must use the same)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-data", action="store_true", help="keep the generated images in OUT/data")
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    config = PriorConfig(
        out=args.out,
        model=ModelConfig(name=args.model, in_channels=args.channels, options=dict(args.model_option)),
        kind=args.kind,
        styles=args.styles,
        images=args.images,
        size=args.size,
        steps=args.steps,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        keep_data=args.keep_data,
    )
    path = build_prior(config)
    print(
        f"prior: {path} ({config.styles * config.images} generated images, {config.steps} steps); "
        f"start from it with: fedseg train --init {path} ..."
    )
    return 0
