"""Process settings that make PyTorch fast on small CPU machines, applied when fedseg is imported.

Two things cost most of the wall time of a CPU training step before these settings:

- **glibc's allocator hands large tensor buffers back to the kernel after every step** (buffers
  above its mmap threshold are unmapped on free, and the heap top is trimmed), so the next
  step faults every page in again: system time was most of the wall time. ``mallopt`` keeps
  freed memory in the process instead (``M_MMAP_MAX = 0``: big buffers come from the heap;
  ``M_TRIM_THRESHOLD`` at its maximum: the heap is never trimmed). The cost is that the process
  keeps its peak memory until it exits, which a training process does anyway.
- **Threads.** PyTorch's intra-op pool is sized to the CPUs this process may really use (its
  affinity mask and its cgroup CPU quota, e.g. a container's ``--cpus``), the inter-op pool to 1,
  and OpenCV to one thread, so that data augmentation does not fight the model for cores.

Nothing has to be set by the user: importing fedseg (the CLI, the Flower apps in every simulation
actor and SuperNode, the tests) applies both once per process. ``FEDSEG_TUNING=0`` turns it off;
an explicit ``OMP_NUM_THREADS`` (Ray sets it per actor) or ``GLIBC_TUNABLES`` malloc setting is
respected. ``status()`` says what was applied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
INT_MAX = 2**31 - 1  # mallopt takes an int: larger values would wrap (to 0 = trim always)


@dataclass(frozen=True)
class RuntimeStatus:
    """What ``configure()`` applied in this process."""

    allocator: str
    threads: int
    cpu_budget: int

    def describe(self) -> str:
        return f"allocator: {self.allocator}; torch threads: {self.threads} of a budget of {self.cpu_budget} CPUs"


_STATUS: RuntimeStatus | None = None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup's CPU quota (cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def cpu_budget() -> int:
    """CPUs this process can really use: its affinity mask, capped by a cgroup quota."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    if limit is not None:
        available = min(available, max(1, math.floor(limit)))
    return max(1, available)


def _configure_allocator() -> str:
    if not sys.platform.startswith("linux"):
        return "platform default (not Linux)"
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES from the environment"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "platform default (no glibc mallopt)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_TRIM_THRESHOLD, INT_MAX) != 1 or mallopt(M_MMAP_MAX, 0) != 1:
        return "platform default (mallopt refused)"
    return "glibc: freed buffers kept (no mmap, no trim)"


def _configure_threads(budget: int) -> int:
    import torch

    explicit = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(explicit) if explicit.isdigit() and int(explicit) > 0 else budget
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only possible before any inter-op work; then the pool stays as it is
        pass
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    return threads


def configure() -> RuntimeStatus:
    """Apply the allocator and thread settings once per process; returns what was applied."""
    global _STATUS
    if _STATUS is not None:
        return _STATUS
    budget = cpu_budget()
    if os.environ.get("FEDSEG_TUNING", "1") == "0":
        import torch

        _STATUS = RuntimeStatus("untouched (FEDSEG_TUNING=0)", torch.get_num_threads(), budget)
    else:
        _STATUS = RuntimeStatus(_configure_allocator(), _configure_threads(budget), budget)
    return _STATUS


def status() -> RuntimeStatus:
    return configure()
