"""Which crops each training step draws, as keys ``(image_index, sample_seed)``.

Without DP the keys of step ``s`` depend only on ``(seed, s)``, so a resumed run draws the same
crops. ``PoissonKeys`` is DP-SGD's sampler: each privacy unit (an image, or all images of one
subject) joins a step's batch independently with probability ``sample_rate`` (batches can be
empty), which privacy amplification by subsampling assumes. The analysis also assumes that the
batches are secret, so ``PoissonKeys`` takes no seed: membership and crop seeds come from the
operating system's cryptographically secure generator (``os.urandom``), and a resumed DP run
draws fresh batches.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from fedseg.signals import leave_process_group

if typing.TYPE_CHECKING:
    from fedseg.data.crops import CropDataset

SampleKey = tuple[int, int]


class KeySampler(Protocol):
    def keys_for_step(self, step: int) -> list[SampleKey]: ...


def _with_seeds(indices: np.ndarray, rng: np.random.Generator) -> list[SampleKey]:
    seeds = rng.integers(0, 2**31 - 1, size=len(indices))
    return [(int(i), int(s)) for i, s in zip(indices, seeds)]


class UniformKeys:
    """``batch_size`` images drawn uniformly with replacement from ``pool``."""

    def __init__(self, pool: Sequence[int], batch_size: int, *, seed: int) -> None:
        if len(pool) < 1 or batch_size < 1:
            raise ValueError(f"need a non-empty pool and batch_size >= 1, got {len(pool)}, {batch_size}")
        self.pool, self.batch_size, self.seed = np.asarray(pool), batch_size, seed

    def keys_for_step(self, step: int) -> list[SampleKey]:
        rng = np.random.default_rng([self.seed, step])
        return _with_seeds(self.pool[rng.integers(0, len(self.pool), size=self.batch_size)], rng)


class StratifiedKeys:
    """``batch_size`` labelled images plus ``round(batch_size * unlabelled_ratio)`` unlabelled ones (Mean Teacher).

    The labelled part is the batch a supervised-only run would draw, so Mean Teacher adds the
    unlabelled images on top of the same supervised signal rather than replacing part of it.
    """

    def __init__(
        self, labelled: Sequence[int], unlabelled: Sequence[int], batch_size: int, *, unlabelled_ratio: float, seed: int
    ) -> None:
        if not labelled:
            raise ValueError("Mean Teacher needs at least one labelled image")
        if unlabelled_ratio < 0:
            raise ValueError(f"unlabelled_ratio must be >= 0, got {unlabelled_ratio}")
        self.labelled = UniformKeys(labelled, batch_size, seed=seed)
        n_unlabelled = round(batch_size * unlabelled_ratio) if unlabelled else 0
        self.unlabelled = UniformKeys(unlabelled, n_unlabelled, seed=seed + 1) if n_unlabelled else None

    def keys_for_step(self, step: int) -> list[SampleKey]:
        keys = self.labelled.keys_for_step(step)
        return keys + (self.unlabelled.keys_for_step(step) if self.unlabelled is not None else [])


class PoissonKeys:
    """Each unit of ``units`` (a list of image indices) is in a step's batch independently with
    probability ``sample_rate`` (one for all, or one per unit); a sampled unit brings all its images.

    ``entropy(n)`` returns n secret random bytes (default ``os.urandom``).
    Steps are not reproducible, by design: nothing derived from a run's seed reaches this sampler.
    """

    def __init__(
        self,
        units: Sequence[Sequence[int]],
        sample_rate: float | Sequence[float],
        *,
        entropy: Callable[[int], bytes] | None = None,
    ) -> None:
        rates = np.broadcast_to(np.asarray(sample_rate, dtype=np.float64), (len(units),))
        if not ((rates > 0.0) & (rates <= 1.0)).all():
            raise ValueError(f"every sample_rate must be in (0, 1], got {sample_rate}")
        if not units or any(len(unit) == 0 for unit in units):
            raise ValueError("need at least one unit, and every unit needs at least one image")
        self.units = [list(unit) for unit in units]
        self.sample_rate, self.entropy = rates, entropy

    def _bytes(self, count: int) -> bytes:
        return self.entropy(count) if self.entropy is not None else os.urandom(count)

    def _uniform(self, count: int) -> np.ndarray:
        """``count`` uniform values in [0, 1) from the secure source (53 random bits each)."""
        words = np.frombuffer(self._bytes(8 * count), dtype=np.uint64, count=count)
        return (words >> np.uint64(11)).astype(np.float64) / float(2**53)

    def keys_for_step(self, step: int) -> list[SampleKey]:
        """The keys of one step (``step`` is ignored: every call is a fresh, secret draw)."""
        chosen = np.flatnonzero(self._uniform(len(self.units)) < self.sample_rate)
        indices = [index for unit in chosen for index in self.units[unit]]
        seeds = np.frombuffer(self._bytes(4 * len(indices)), dtype=np.uint32, count=len(indices)) >> np.uint32(1)
        return [(int(i), int(s)) for i, s in zip(indices, seeds)]


class StepBatches(Sampler[list[SampleKey]]):
    """The key lists of steps ``start..stop-1`` (a batch sampler for a DataLoader)."""

    def __init__(self, keys: KeySampler, *, start: int, stop: int) -> None:
        self.keys, self.start, self.stop = keys, start, stop

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for step in range(self.start, self.stop):
            yield self.keys.keys_for_step(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def collate_or_none(items: list) -> dict[str, torch.Tensor] | None:
    """``default_collate``, or None for an empty (Poisson) batch."""
    return default_collate(items) if items else None


def step_loader(
    dataset: Dataset | CropDataset,
    keys: KeySampler,
    *,
    start: int,
    stop: int,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches for steps ``start..stop-1``; an empty batch comes out as None."""
    return DataLoader(
        typing.cast(Dataset, dataset),
        batch_sampler=StepBatches(keys, start=start, stop=stop),
        num_workers=workers,
        collate_fn=collate_or_none,
        pin_memory=pin_memory,
        worker_init_fn=leave_process_group,  # a job's SIGTERM stops the main process; it stops its workers
    )
