"""How well a training step and whole-image inference use the CPU.

    python -m simulations.bench.step_efficiency --out step_efficiency.json

Reports, for the default model (or ``--model-options``) with the default crop and batch:

- the FLOPs of one training step (forward and backward, counted by ``torch.utils.flop_counter``),
  the step's wall time through ``LocalTrainer`` (augmented crops included), and the fraction of
  the CPU's fp32 peak that makes; the peak is given (``--peak-gflops``, default 320: 2 cores x
  AVX-512 with two FMA units at 2.5 GHz) and a large single-precision matrix product is timed as
  the best this machine reaches in practice;
- system time as a share of wall time during training and inference (``getrusage``);
- whole-image inference in megapixels per second on a 999 x 960 image (a CHASE_DB1 image's size).

Each figure runs after a warm-up. Run it on an otherwise idle machine (or under ``chrt -f 10``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fedseg.devices import fast_layout, to_fast_layout
from fedseg.inference.predictor import Predictor
from fedseg.inference.sliding_window import TilingConfig
from fedseg.losses import FocalDiceLoss, LossConfig
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing
from fedseg.runtime import status
from fedseg.training.local import LocalConfig, LocalTrainer
from simulations.bench.common import write_result
from simulations.bench.synthetic_crops import synthetic_crops

CPU = torch.device("cpu")


def timed_usage(function: Callable[[], None], repeats: int) -> dict[str, float]:
    """Wall, user and system seconds per call of ``function`` (after one warm-up call)."""
    function()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeats):
        function()
    wall = (time.perf_counter() - started) / repeats
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_seconds": wall,
        "user_seconds": (after.ru_utime - before.ru_utime) / repeats,
        "system_seconds": (after.ru_stime - before.ru_stime) / repeats,
        "system_share_of_wall": (after.ru_stime - before.ru_stime) / repeats / wall,
    }


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = timed_usage(lambda: torch.mm(a, b), repeats)["wall_seconds"]
    return 2 * size**3 / seconds / 1e9


def step_flops(model_config: ModelConfig, batch: int, crop: int) -> int:
    model = to_fast_layout(build_model(model_config), CPU)
    loss_fn = FocalDiceLoss.from_config(LossConfig(), reduction="none")
    images = fast_layout(torch.randn(batch, model_config.in_channels, crop, crop), CPU)
    masks = (torch.rand(batch, 1, crop, crop) > 0.9).float()
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(images), masks).mean().backward()
    return int(counter.get_total_flops())


def training_step(model_config: ModelConfig, batch: int, crop: int, repeats: int) -> dict[str, float]:
    dataset = synthetic_crops(images=64, size=max(2 * crop, 512), crop=crop, labelled_fraction=1.0)
    trainer = LocalTrainer(
        model_config=model_config,
        config=LocalConfig(batch_size=batch),
        dataset=dataset,
        device=CPU,
        seed=0,
        planned_steps=repeats + 2,
    )
    return timed_usage(lambda: trainer.run(1), repeats)


def inference(model_config: ModelConfig, tile: int, overlap: float, repeats: int) -> dict[str, float]:
    image = (np.random.default_rng(0).random((960, 999, 3)) * 255).astype(np.uint8)
    tiling = TilingConfig(tile_size=tile, overlap=overlap, batch_size=4)
    predictor = Predictor(build_model(model_config), Preprocessing(), tiling, tta=False, device=CPU)
    usage = timed_usage(lambda: predictor.probabilities(image), repeats)
    return {**usage, "megapixels_per_second": image.shape[0] * image.shape[1] / usage["wall_seconds"] / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-options", default="{}")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-gflops", type=float, default=320.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = ModelConfig(options=json.loads(args.model_options))
    flops = step_flops(model, args.batch_size, args.crop)
    step = training_step(model, args.batch_size, args.crop, args.repeats)
    achieved = flops / step["wall_seconds"] / 1e9
    results = {
        "runtime": status().describe(),
        "step_gflop": flops / 1e9,
        "training_step": step,
        "achieved_gflops": achieved,
        "fraction_of_peak": achieved / args.peak_gflops,
        "matmul_gflops": matmul_gflops(),
        "inference": inference(model, args.tile_size, args.overlap, max(2, args.repeats // 2)),
    }
    results["fraction_of_matmul"] = achieved / results["matmul_gflops"]
    write_result(args.out, "step_efficiency", results, **vars(args))


if __name__ == "__main__":
    main()
