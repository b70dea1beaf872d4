"""What every benchmark records: the machine, the software, and a JSON result written atomically."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
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


def process_tree(roots: list[int]) -> set[int]:
    """``roots`` and every process descended from them (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return tree


@dataclass(frozen=True)
class TreeMemory:
    """Memory of a process tree in KiB: summed resident memory (shared pages counted once per process)
    and summed proportional set size (shared pages split between the processes that map them)."""

    processes: int
    rss_kib: int
    pss_kib: int


def tree_memory(roots: list[int], *, include_roots: bool = True) -> TreeMemory:
    """Memory of ``roots`` and their descendants (only the descendants when ``include_roots`` is false)."""
    rss = pss = count = 0
    for pid in process_tree(roots) - (set() if include_roots else set(roots)):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
            rss += int(fields["Rss"].split()[0])
            pss += int(fields["Pss"].split()[0])
            count += 1
        except (OSError, KeyError, ValueError):
            continue  # the process ended, or is not ours to read
    return TreeMemory(count, rss, pss)


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
