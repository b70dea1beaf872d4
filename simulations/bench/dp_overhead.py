"""Time and peak memory per training step: plain, DP-SGD, and DP-SGD + Mean Teacher.

    python -m simulations.bench.dp_overhead --device cpu --batch-size 16 --crop 256 --out dp_cpu.json
    python -m simulations.bench.dp_overhead --device cuda --out dp_gpu.json
    python -m simulations.bench.dp_overhead --device cuda --grad-sample-mode ew --model smp-unet

Each variant runs in its own process, so that peak memory is its own: CUDA's
max_memory_allocated on a GPU, the process's peak resident memory (VmHWM) on the CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from fedseg.devices import resolve_device
from fedseg.models import ModelConfig
from fedseg.privacy import PrivacyConfig
from fedseg.training.local import LocalConfig, LocalTrainer
from fedseg.training.mean_teacher import MeanTeacherConfig
from simulations.bench.common import write_result
from simulations.bench.synthetic_crops import synthetic_crops

VARIANTS = ("plain", "dp", "dp+mean-teacher")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    dataset = synthetic_crops(
        images=max(64, args.batch_size * 4), size=max(args.crop * 2, 512), crop=args.crop, labelled_fraction=0.5
    )
    privacy = PrivacyConfig(epsilon=8.0, planned_rounds=1) if args.variant != "plain" else None
    teacher = MeanTeacherConfig() if args.variant == "dp+mean-teacher" else None
    config = LocalConfig(
        batch_size=args.batch_size, privacy=privacy, mean_teacher=teacher, grad_sample_mode=args.grad_sample_mode
    )
    options = json.loads(args.model_options) if args.model_options else {}
    model = ModelConfig(name=args.model, options=options)
    trainer = LocalTrainer(
        model_config=model,
        config=config,
        dataset=dataset,
        device=device,
        seed=0,
        planned_steps=args.steps + args.warmup + 1,
    )
    trainer.run(args.warmup)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _status_kib("VmRSS")
    start = time.perf_counter()
    trainer.run(args.steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _status_kib("VmHWM") / 1024
    return {
        "variant": args.variant,
        "seconds_per_step": seconds,
        "peak_memory_mib": memory,
        "rss_before_steps_mib": rss_before / 1024,
        "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss",
        "images_per_second": args.batch_size / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--model-options", default="", help='JSON, e.g. \'{"encoder_name": "mobilenet_v2"}\'')
    parser.add_argument("--grad-sample-mode", default=None, choices=(None, "hooks", "ew", "functorch"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return
    results = []
    for variant in VARIANTS:
        command = [sys.executable, "-m", "simulations.bench.dp_overhead", "--variant", variant] + [
            a for a in sys.argv[1:] if not a.startswith("--out") and a != args.out
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(
            f"{variant:>16}: {results[-1]['seconds_per_step']:.3f} s/step, {results[-1]['peak_memory_mib']:.0f} MiB",
            file=sys.stderr,
        )
    plain = results[0]["seconds_per_step"]
    for result in results:
        result["slowdown_vs_plain"] = result["seconds_per_step"] / plain
    write_result(
        args.out,
        "dp_overhead",
        results,
        device=args.device,
        model=args.model,
        model_options=args.model_options,
        grad_sample_mode=args.grad_sample_mode or "model default",
        batch_size=args.batch_size,
        crop=args.crop,
        steps=args.steps,
    )


if __name__ == "__main__":
    main()
