"""``fedseg evaluate``: score a checkpoint on whole images of one or more centres."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.cli.common import add_device, csv_list
from fedseg.evaluation.evaluate import EvaluateConfig, evaluate


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="score a checkpoint on whole images (held-out centres)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="dataset root: one folder per centre")
    parser.add_argument("--centres", type=csv_list, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.json and per_image.csv")
    parser.add_argument("--tile-size", type=int, default=None, help="default: twice the training crop")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--manifest", type=Path, default=None, help="a run's manifest.json, to score one --split")
    parser.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
    add_device(parser)


def format_table(metrics: dict) -> str:
    lines = [f"{'centre':<20} {'images':>6} {'dice':>7} {'iou':>7} {'sens':>7} {'prec':>7} {'hd95':>8}"]
    for centre, m in metrics["centres"].items():
        cells = [
            f"{m[k]:7.4f}" if m[k] is not None else f"{'-':>7}" for k in ("dice", "iou", "sensitivity", "precision")
        ]
        hd = f"{m['hd95']:8.2f}" if m["hd95"] is not None else f"{'-':>8}"
        lines.append(f"{centre:<20} {m['n_images']:>6} {' '.join(cells)} {hd}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = EvaluateConfig(
        checkpoint=args.checkpoint,
        data=args.data,
        centres=args.centres,
        out=args.out,
        tile_size=args.tile_size,
        overlap=args.overlap,
        threshold=args.threshold,
        device=args.device,
        manifest=args.manifest,
        split=args.split,
    )
    report = evaluate(config)
    print(format_table(report.metrics))
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'per_image.csv'}")
    if report.failures:
        print(f"{len(report.failures)} image(s) could not be read and were skipped:")
        for failure in report.failures:
            print(f"  {failure}")
        return 1
    return 0
