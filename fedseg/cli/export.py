"""``fedseg export``: a checkpoint as an ONNX or TorchScript file with its preprocessing contract."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.cli.common import csv_list
from fedseg.export import ExportConfig, export
from fedseg.export.exporter import FORMATS
from fedseg.inference.predictor import InferenceConfig
from fedseg.inference.sliding_window import DEFAULT_OVERLAP


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="write a checkpoint as ONNX or TorchScript, checked on real images")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="file to write (.onnx, or .pt for TorchScript)")
    group = parser.add_argument_group("checks (real images: the export is refused if they fail)")
    group.add_argument("--check-data", type=Path, required=True, help="dataset root: one folder per centre")
    group.add_argument("--check-centres", type=csv_list, required=True, help="centres whose images check the export")
    group.add_argument("--manifest", type=Path, default=None, help="a run's manifest.json, to check on one --split")
    group.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
    group.add_argument("--parity-images", type=int, default=3, help="images for the 1e-4 parity check (default: 3)")
    group = parser.add_argument_group("compression (judged by Dice on the check images: use validation images)")
    group.add_argument(
        "--compress", default="none", help="none, int8 (ONNX Runtime static quantisation) or prune:F (e.g. prune:0.5)"
    )
    group.add_argument("--max-dice-drop", type=float, default=0.01, help="refuse beyond this Dice drop (0.01)")
    group.add_argument("--allow-dice-drop", action="store_true", help="write a compressed model anyway, with a warning")
    group = parser.add_argument_group("inference contract written into the file")
    group.add_argument("--tile-size", type=int, default=None, help="sliding-window tile (default: 4 x the crop)")
    group.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP)
    group.add_argument("--threshold", type=float, default=0.5)


def run(args: argparse.Namespace) -> int:
    report = export(
        ExportConfig(
            checkpoint=args.checkpoint,
            out=args.out,
            format=args.format,
            check_data=args.check_data,
            check_centres=args.check_centres,
            manifest=args.manifest,
            split=args.split,
            parity_images=args.parity_images,
            compression=args.compress,
            max_dice_drop=args.max_dice_drop,
            allow_dice_drop=args.allow_dice_drop,
            inference=InferenceConfig(tile_size=args.tile_size, overlap=args.overlap, threshold=args.threshold),
        )
    )
    print(
        f"wrote {report.path} ({report.bytes / 1e6:.2f} MB, tile {report.contract.tile_size}); largest probability "
        f"difference to PyTorch {report.parity_max_difference:.1e} over {report.parity_images} image(s)"
    )
    if report.dice_drop is not None:
        print(f"{report.contract.compression}: Dice {report.dice_reference:.4f} -> {report.dice_exported:.4f}")
    return 0
