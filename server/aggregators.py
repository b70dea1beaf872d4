"""Turning a round's authenticated updates into the next global model: the ``Aggregator`` protocol.

``PlaintextAggregator``: FedAvg weighted by examples, in float64, refusing (alone) an update
with other tensors, non-finite values or an absurd norm. ``EncryptedAggregator``: the sum of
CKKS ciphertexts; the server never holds a key that decrypts. With masks it also recovers from
dropouts: when a participant's update is missing, the survivors reveal this round's seeds with
it (``reveal``) and the server subtracts those masks from the sum.

Why not Flower's own strategies: with encryption the server sees one sum, never an update, so
the robust rules (Krum, trimmed mean, median, norm clipping) cannot run there, and FedAvg is a
sum fedseg must do on ciphertexts itself. In plaintext mode FedAvg (and FedProx, whose proximal
term runs at the sites) is this module's ``weighted_average``; a robust rule would be another
``Aggregator`` here, next to per-update checks that need the same plaintext.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from fedseg.crypto.keys import HEContext
from fedseg.crypto.masking import combine, mask_sign
from fedseg.crypto.packing import ABSURD_WEIGHT, EncryptedVector, Layout, add_encrypted, add_plain
from fedseg.crypto.protection import OWN, RevealedSeeds, RoundTicket, masks_apply
from fedseg.federation.aggregation import weighted_average
from server.outcome import AggregationStats
from sites.records import Model

MAX_RELATIVE_CHANGE = 10.0  # an update further than 10x the global model's norm from it is absurd

# survivors -> (their revealed seeds, or why not): how the encrypted aggregator asks for seeds
Reveal = Callable[[Sequence[str], Sequence[str]], Mapping[str, RevealedSeeds | str]]


@dataclass(frozen=True)
class Contribution:
    """An update that passed authentication: who sent it, the examples it stands for, and the payload."""

    site: str
    examples: int
    payload: Model


@dataclass(frozen=True)
class Aggregate:
    model: Model | None
    accepted: tuple[str, ...]
    rejected: Mapping[str, str] = field(default_factory=dict)
    stats: AggregationStats | None = None


class Aggregator(Protocol):
    def aggregate(
        self, contributions: Sequence[Contribution], *, current: Model, ticket: RoundTicket, reveal: Reveal
    ) -> Aggregate: ...


def _plaintext_problem(weights: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor]) -> str | None:
    if not isinstance(weights, Mapping) or list(weights) != list(current):
        return "sent other tensors than the global model's (another model, or an encrypted update)"
    change, norm = 0.0, 0.0
    for name, value in weights.items():
        if tuple(value.shape) != tuple(current[name].shape):
            return f"tensor {name} has shape {tuple(value.shape)}, the global model {tuple(current[name].shape)}"
        if not value.dtype.is_floating_point:
            continue
        if not bool(torch.isfinite(value).all()):
            return f"non-finite weights (NaN or Inf) in {name}"
        if value.numel() and float(value.abs().max()) > ABSURD_WEIGHT:
            return f"absurd weights (beyond {ABSURD_WEIGHT:g}) in {name}"
        reference = current[name].detach().double()
        change += float((value.detach().double() - reference).pow(2).sum())
        norm += float(reference.pow(2).sum())
    if math.sqrt(change) > MAX_RELATIVE_CHANGE * max(math.sqrt(norm), 1.0):
        return f"absurd update norm: {math.sqrt(change):.3g} away from the global model (norm {math.sqrt(norm):.3g})"
    return None


class PlaintextAggregator:
    """FedAvg of plaintext updates weighted by examples; a bad update is refused alone."""

    def aggregate(
        self, contributions: Sequence[Contribution], *, current: Model, ticket: RoundTicket, reveal: Reveal
    ) -> Aggregate:
        if isinstance(current, EncryptedVector):
            raise TypeError("the plaintext aggregator was given an encrypted global model")
        rejected: dict[str, str] = {}
        usable: list[Contribution] = []
        for contribution in contributions:
            problem = _plaintext_problem(contribution.payload, current)  # type: ignore[arg-type]
            if problem is None:
                usable.append(contribution)
            else:
                rejected[contribution.site] = problem
        if not usable:
            return Aggregate(None, (), rejected)
        model = weighted_average([(c.payload, float(c.examples)) for c in usable])  # type: ignore[misc]
        return Aggregate(model, tuple(c.site for c in usable), rejected)


class EncryptedAggregator:
    """The sum of encrypted (and, with ``masked``, masked) updates; unmasks what dropouts left behind."""

    def __init__(self, he: HEContext, layout: Layout, *, masked: bool, min_sites: int) -> None:
        self.he, self.layout, self.masked, self.min_sites = he, layout, masked, min_sites

    def _sum(self, updates: Sequence[tuple[str, EncryptedVector]], ticket: RoundTicket):
        total, failures = add_encrypted(
            [u for _, u in updates],
            self.he,
            layout_hash=self.layout.hash,
            length=self.layout.size,
            fixed=ticket.fixed(self.he),
        )
        return total, {updates[i][0]: f"ciphertext rejected: {reason}" for i, reason in failures.items()}

    def _unmask(
        self, survivors: list[str], ticket: RoundTicket, reveal: Reveal, rejected: dict[str, str]
    ) -> tuple[list[str], np.ndarray | None]:
        """Ask the survivors for their own seeds and those with the missing sites, until every survivor answered.

        Returns the survivors and minus their masks (None when too few survive to unmask)."""
        while True:
            missing = [p for p in ticket.participants if p not in survivors]
            if not survivors or len(survivors) < self.min_sites:
                return survivors, None
            answers = reveal(survivors, missing)
            silent = [s for s in survivors if not isinstance(answers.get(s), RevealedSeeds)]
            if not silent:
                break
            for site in silent:
                rejected[site] = f"left out: did not reveal its seeds with sites that dropped out ({answers.get(site)})"
            survivors = [s for s in survivors if s not in silent]
        fixed = ticket.fixed(self.he)
        seeds = [
            (mask_sign(survivor, dropped), answers[survivor].seeds[dropped])  # type: ignore[union-attr]
            for survivor in survivors
            for dropped in missing
        ]
        own = [(1, answers[survivor].seeds[OWN]) for survivor in survivors]  # type: ignore[union-attr]
        residue = combine([*seeds, *own], self.layout.size, fixed.modulus_bits)
        return survivors, (np.uint64(0) - residue) & np.uint64(2**fixed.modulus_bits - 1)

    def aggregate(
        self, contributions: Sequence[Contribution], *, current: Model, ticket: RoundTicket, reveal: Reveal
    ) -> Aggregate:
        started = time.perf_counter()
        rejected: dict[str, str] = {}
        encrypted = []
        for c in contributions:
            if isinstance(c.payload, EncryptedVector):
                encrypted.append((c.site, c.payload))
            else:
                rejected[c.site] = "sent plaintext weights although he = true"
        total, failures = self._sum(encrypted, ticket)
        rejected.update(failures)
        survivors = [site for site, _ in encrypted if site not in failures]
        unmasked: tuple[str, ...] = ()
        if self.masked and total is not None and masks_apply(ticket):
            kept, correction = self._unmask(survivors, ticket, reveal, rejected)
            if kept != survivors:
                total, _ = self._sum([(s, u) for s, u in encrypted if s in kept], ticket)
            if correction is None:
                total = None  # masks that cannot be removed: the sum is noise
            elif total is not None:
                total = add_plain(total, correction, self.he)
                unmasked = tuple(p for p in ticket.participants if p not in kept)
            survivors = kept
        stats = AggregationStats(
            "masked" if self.masked else "single-key",
            time.perf_counter() - started,
            total.nbytes if total is not None else 0,
            unmasked,
        )
        return Aggregate(total, tuple(survivors) if total is not None else (), rejected, stats)
