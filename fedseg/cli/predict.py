"""``fedseg predict``: one binary PNG mask per image of a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.cli.common import add_device, report_failures
from fedseg.cli.evaluate import add_inference_arguments, inference_config_from_args
from fedseg.inference.predict import PredictConfig, predict_folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="write a binary mask per image (PNG) or volume (NIfTI) of a folder")
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="a checkpoint, or with --engine a file from `fedseg export`"
    )
    parser.add_argument(
        "--engine",
        choices=("torch", "onnxruntime", "torchscript"),
        default="torch",
        help="torch (a .pt checkpoint, the default), onnxruntime (.onnx) or torchscript (exported .pt); CPU",
    )
    parser.add_argument(
        "--images", type=Path, required=True, help="folder of images or volumes (or one volume / DICOM series folder)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for <stem>.png (volumes: <stem>.nii.gz) masks")
    parser.add_argument("--probabilities", action="store_true", help="also write <stem>_prob.png / _prob.nii.gz")
    add_inference_arguments(parser)
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    config = PredictConfig(
        checkpoint=args.checkpoint,
        images=args.images,
        out=args.out,
        inference=inference_config_from_args(args),
        probabilities=args.probabilities,
        device=args.device,
        engine=args.engine,
    )
    report = predict_folder(config)
    masks = [p for p in report.written if "_prob." not in p.name]
    print(f"wrote {len(masks)} mask(s) to {args.out}")
    return report_failures(report.failures)
