"""Inference throughput in megapixels per second: plain, TTA, CRF, TTA + CRF.

    python -m simulations.bench.inference_throughput --device cpu --out throughput.json
    python -m simulations.bench.inference_throughput --device cuda --checkpoint runs/x/checkpoints/best.pt

Without a checkpoint the default model is timed with random weights (speed does not depend on them).
Images are 1000 x 1000 and 1600 x 1000, the sizes of the retinal centres.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from fedseg.devices import resolve_device
from fedseg.inference.crf import CRFConfig, CRFPool, refine
from fedseg.inference.predictor import InferenceConfig, Predictor
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, load_checkpoint
from simulations.bench.common import timed, write_result

SIZES = ((1000, 1000), (1000, 1600))


def build_predictor(args: argparse.Namespace, tta: bool) -> Predictor:
    device = resolve_device(args.device)
    config = InferenceConfig(tile_size=args.tile_size, tile_batch=args.tile_batch, tta=tta)
    if args.checkpoint:
        return Predictor.from_checkpoint(load_checkpoint(args.checkpoint), config, device)
    model = build_model(ModelConfig())
    return Predictor(model, Preprocessing(), config.tiling({"crop_size": 256}), tta=tta, device=device)


def crf_parallel_seconds(images: list[np.ndarray], maps: list[np.ndarray], config: CRFConfig) -> float:
    """Wall time of CRF over all images with one worker per core."""
    import time

    start = time.perf_counter()
    with CRFPool(config, workers=os.cpu_count()) as pool:
        for index, (image, probabilities) in enumerate(zip(images, maps)):
            list(pool.submit(index, image, probabilities))
        list(pool.drain())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--tile-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for size in SIZES]
    megapixels = sum(h * w for h, w in SIZES) / 1e6
    results = {}
    for tta in (False, True):
        predictor = build_predictor(args, tta)
        with torch.inference_mode():
            seconds = timed(lambda p=predictor: [p.probabilities(image) for image in images], repeats=args.repeats)
        results["tta" if tta else "plain"] = {"seconds": seconds, "megapixels_per_second": megapixels / seconds}
    maps = [build_predictor(args, False).probabilities(image) for image in images]
    crf = CRFConfig()
    serial = timed(lambda: [refine(im, p, crf) for im, p in zip(images, maps)], repeats=args.repeats)
    parallel = crf_parallel_seconds(images * 4, maps * 4, crf) / 4
    results["crf_only"] = {
        "seconds_serial": serial,
        "seconds_parallel": parallel,
        "megapixels_per_second_parallel": megapixels / parallel,
    }
    for name, base in (("plain+crf", "plain"), ("tta+crf", "tta")):
        seconds = results[base]["seconds"] + parallel
        results[name] = {"seconds": seconds, "megapixels_per_second": megapixels / seconds}
    write_result(
        args.out,
        "inference_throughput",
        results,
        device=args.device,
        tile_size=args.tile_size,
        tile_batch=args.tile_batch,
        checkpoint=args.checkpoint,
        image_sizes=[list(s) for s in SIZES],
    )


if __name__ == "__main__":
    main()
