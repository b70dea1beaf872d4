"""Deployment figures of a checkpoint: ONNX Runtime against PyTorch, int8 quantisation and pruning,
each as file size, CPU speed (megapixels/s of whole-image sliding-window inference) and held-out
Dice change.

    nice -n 15 python -m simulations.bench.deployment --checkpoint CKPT --data ../shared/data/polyp \\
        --centre Kvasir-SEG --test-fraction 0.1 --out simulations/results/DATE-MACHINE-deployment

Every variant is written by ``fedseg export`` (library call), so it passed the export's checks
(parity 1e-4 for float exports; for compressed ones the Dice check is recorded, with
``allow_dice_drop`` so that the figure is kept even past the 0.01 limit). Speed is measured on
``--threads`` CPU threads (ONNX Runtime's intra-op threads and torch's alike): wall megapixels/s,
and process CPU seconds per megapixel, which other load on a shared machine disturbs less.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from fedseg.data.layout import scan_dataset
from fedseg.data.reading import read_image
from fedseg.data.splits import SplitConfig, make_manifest
from fedseg.export import ExportConfig, export
from fedseg.export.compress import zipped_size
from fedseg.export.engines import exported_predictor
from fedseg.export.exporter import check_records, dice_of
from fedseg.inference.predictor import InferenceConfig, Predictor
from fedseg.models.checkpoint import load_checkpoint
from simulations.bench.common import write_result

VARIANTS = (("onnx", "none"), ("onnx", "int8"), ("onnx", "prune:0.5"), ("torchscript", "none"))


def speed(predictor: Predictor, images: list[Any]) -> dict[str, float]:
    predictor.probabilities(images[0])  # warm-up
    megapixels = sum(image.shape[0] * image.shape[1] for image in images) / 1e6
    wall, cpu = time.perf_counter(), time.process_time()
    for image in images:
        predictor.probabilities(image)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"megapixels_per_second": megapixels / wall, "cpu_seconds_per_megapixel": cpu / megapixels}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--centre", required=True)
    parser.add_argument("--test-fraction", type=float, default=0.1, help="the held-out split (polyp-sites: 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile-size", type=int, default=None)
    parser.add_argument("--speed-images", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = make_manifest(
        scan_dataset(args.data, [args.centre]),
        SplitConfig(seed=args.seed, val_fraction=0.0, test_fraction=args.test_fraction),
    ).save(args.out / "heldout-manifest.json")
    checkpoint = load_checkpoint(args.checkpoint)
    inference = InferenceConfig(tile_size=args.tile_size)
    check = dict(check_data=args.data, check_centres=(args.centre,), manifest=manifest, split="test")
    records = check_records(ExportConfig(args.checkpoint, args.out / "unused.onnx", "onnx", **check))
    images = [read_image(r.image) for r in records[: args.speed_images]]
    reference = Predictor.from_checkpoint(checkpoint, inference, torch.device("cpu"))
    reference_dice = dice_of(reference, records, 0.5) or 0.0
    results: dict[str, Any] = {
        "pytorch": {
            "bytes": args.checkpoint.stat().st_size,
            "zipped_bytes": zipped_size(args.checkpoint),
            "heldout_dice": reference_dice,
            **speed(reference, images),
        }
    }
    print(f"pytorch: {results['pytorch']}", flush=True)
    for format, compression in VARIANTS:
        suffix = ".onnx" if format == "onnx" else ".ts.pt"
        path = args.out / "work" / f"{checkpoint.model.name}-{compression.replace(':', '')}{suffix}"
        report = export(
            ExportConfig(
                args.checkpoint,
                path,
                format,
                **check,
                compression=compression,
                allow_dice_drop=True,
                inference=inference,
            )
        )
        predictor = exported_predictor(path, "onnxruntime" if format == "onnx" else "torchscript", inference)
        dice = report.dice_exported if report.dice_exported is not None else dice_of(predictor, records, 0.5) or 0.0
        name = f"{format} {compression}"
        results[name] = {
            "bytes": report.bytes,
            "zipped_bytes": zipped_size(path),
            "parity_max_difference": report.parity_max_difference,
            "heldout_dice": dice,
            "heldout_dice_change": dice - reference_dice,
            **speed(predictor, images),
        }
        print(f"{name}: {results[name]}", flush=True)
    write_result(
        args.out / "deployment.json",
        "deployment",
        results,
        checkpoint=str(args.checkpoint),
        model=checkpoint.model.to_json(),
        data=str(args.data),
        centre=args.centre,
        heldout_images=len(records),
        speed_images=args.speed_images,
        threads=args.threads,
        tile_size=args.tile_size,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
