"""``fedseg models``: the model zoo with parameters, CPU ms per megapixel and DP compatibility."""

from __future__ import annotations

import argparse

import torch

from fedseg.models import available_models
from fedseg.models.catalogue import catalogue


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list the model zoo: parameters, CPU speed, DP-SGD compatibility")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"models to list (default: all of {', '.join(available_models())})"
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the CPU timing (instant)")
    parser.add_argument("--size", type=int, default=256, help="timing image side in pixels (default: 256)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the timing (default: torch's)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    entries = catalogue(args.names or None, timing=not args.no_timing, size=args.size)
    print(f"{'model':<20} {'parameters':>11} {'CPU ms/MP':>10}  DP-SGD (Opacus mode)")
    for e in entries:
        speed = f"{e.cpu_ms_per_megapixel:10.0f}" if e.cpu_ms_per_megapixel is not None else f"{'-':>10}"
        dp = f"yes ({e.grad_sample_mode})" if e.dp_compatible else "no"
        print(f"{e.name:<20} {e.parameters / 1e6:10.2f}M {speed}  {dp}")
    if not args.no_timing:
        print(f"CPU: forward pass of one {args.size} x {args.size} image, {torch.get_num_threads()} thread(s)")
    return 0
