"""``fedseg synth``: write a synthetic multi-centre dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.data.synth import KINDS, STYLES, SynthConfig, generate


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("synth", help="generate synthetic centres (vessel trees and blobs with exact masks)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per centre)")
    parser.add_argument("--centres", type=int, default=4, help="number of centres (default: 4)")
    parser.add_argument("--images", type=int, default=20, help="images per centre (default: 20)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default: 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--unlabelled-fraction",
        type=float,
        default=0.0,
        help="fraction of each centre's images written without a mask (default: 0)",
    )
    parser.add_argument("--kind", choices=KINDS, default="both", help="structures drawn (default: both)")
    parser.add_argument(
        "--style",
        choices=STYLES,
        default="centres",
        help="one look per centre (default), or widely varied looks, one per folder (the public prior's data)",
    )


def run(args: argparse.Namespace) -> int:
    config = SynthConfig(
        out=args.out,
        centres=args.centres,
        images=args.images,
        size=args.size,
        seed=args.seed,
        unlabelled_fraction=args.unlabelled_fraction,
        kind=args.kind,
        style=args.style,
    )
    appearances = generate(config)
    print(
        f"wrote {config.centres} centres x {config.images} images to {config.out}: "
        f"{', '.join(a.name for a in appearances)}"
    )
    return 0
