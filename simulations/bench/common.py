"""What every benchmark records: the machine, the software, and a JSON result written atomically."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from fedseg import __version__
from fedseg.files import atomic_write_json


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fedseg": __version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def write_result(path: str | os.PathLike[str] | None, name: str, results: Any, **settings: Any) -> dict[str, Any]:
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
        "settings": settings,
        "results": results,
    }
    if path:
        atomic_write_json(Path(path), payload)
    print(json.dumps(payload, indent=2))
    return payload


def timed(function: Any, *, repeats: int) -> float:
    """Median wall time of ``function()`` over ``repeats`` calls (after one warm-up)."""
    function()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
