"""What a site does to its update before it leaves: weight, mask, encrypt, sign (one call: ``protect``).

Modes, from the files a site holds (``SiteProtection.mode``):

- ``masked``: ``site.context`` + node key + site registry. The update is masked with one mask
  per other participant (``fedseg.crypto.masking``), CKKS-encrypted and signed. No single party
  can read one site's update: the aggregator holds no secret key, and a site (or the held-out
  evaluator) that decrypts another site's ciphertext sees uniform noise; only the sum of all
  participants decrypts.
- ``single-key``: ``site.context`` only. Encrypted, unmasked: every holder of ``site.context``
  who obtains a ciphertext (for example by colluding with the aggregator) reads that update.
- ``plaintext``: no ``site.context``. The weights travel in clear (over TLS), signed when the
  site has a node key.

Masks are doubled (Bonawitz et al., CCS 2017): besides the pairwise masks, each site adds a
self-mask of its own, fresh every round. After the round's updates are in, ``reveal`` gives the
aggregator, from each surviving site, its own self-mask seed and this round's pairwise seeds
with the participants whose updates are not in the sum (dropped out or refused), and nothing
else. An update the aggregator received but refused therefore stays covered by its self-mask.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric import ec

from fedseg.crypto.keys import HEContext
from fedseg.crypto.masking import FixedPoint, combine, mask_sign, round_seed
from fedseg.crypto.packing import EncryptedVector, Layout, encrypt_weighted
from fedseg.crypto.registry import SiteRegistry
from fedseg.crypto.signing import UpdateClaim, pair_key, sign
from fedseg.federation.protocol import weights_digest

Payload = Union[Mapping[str, torch.Tensor], EncryptedVector]


class RoundRefused(ValueError):
    """A request a site refuses to answer because answering could expose an update."""


@dataclass(frozen=True)
class RoundTicket:
    """What the aggregator announces with a train request: the round's context, signed back by the site."""

    run_id: str
    round: int
    participants: tuple[str, ...]
    weight_total: int
    max_sites: int

    def __post_init__(self) -> None:
        if self.weight_total < 1 or self.max_sites < len(self.participants):
            raise RoundRefused(f"unusable round ticket: {self}")

    def fixed(self, he: HEContext) -> FixedPoint:
        return FixedPoint.for_sites(he.parameters, self.max_sites)


@dataclass(frozen=True)
class ProtectedUpdate:
    """A site's update as it travels: the payload, the claim the site signs, and the signature."""

    payload: Payload
    claim: UpdateClaim
    signature: bytes | None
    seconds: float = 0.0


OWN = "self"  # the key of a survivor's own self-mask seed among its revealed seeds


@dataclass(frozen=True)
class RevealedSeeds:
    """One survivor's self-mask seed (``seeds["self"]``) and its seeds with the sites not in the sum, signed."""

    seeds: Mapping[str, bytes]
    claim: UpdateClaim
    signature: bytes | None

    @staticmethod
    def digest(seeds: Mapping[str, bytes]) -> str:
        return hashlib.sha256(json.dumps({k: v.hex() for k, v in sorted(seeds.items())}).encode()).hexdigest()


def masks_apply(ticket: RoundTicket) -> bool:
    """A round of one site has nothing to hide its update from: the sum is that update."""
    return len(ticket.participants) >= 2


def payload_digest(payload: Payload) -> str:
    return payload.digest if isinstance(payload, EncryptedVector) else weights_digest(payload)


@dataclass
class SiteProtection:
    site: str
    he: HEContext | None = None
    node_key: ec.EllipticCurvePrivateKey | None = None
    registry: SiteRegistry | None = None
    workers: int | None = None  # encryption processes (None: up to 4)
    _pair_keys: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def mode(self) -> str:
        if self.he is None:
            return "plaintext"
        return "masked" if self.node_key is not None and self.registry is not None else "single-key"

    def _sign(self, claim: UpdateClaim) -> bytes | None:
        return sign(self.node_key, claim) if self.node_key is not None else None

    def _pair_key(self, peer: str) -> bytes:
        if peer not in self._pair_keys:
            if self.node_key is None or self.registry is None:
                raise RoundRefused(f"site {self.site} holds no node key and registry: it cannot mask")
            public = self.registry.site(peer).key()
            self._pair_keys[peer] = pair_key(self.node_key, public, (self.site, peer))
        return self._pair_keys[peer]

    def _own_seed(self, ticket: RoundTicket) -> bytes:
        """This site's self-mask seed for the round: derived from its node key, so a restart gives the same."""
        if self.node_key is None:
            raise RoundRefused(f"site {self.site} holds no node key: it cannot mask")
        secret = hashlib.sha256(self.node_key.private_numbers().private_value.to_bytes(48, "big")).digest()
        return round_seed(secret, f"self|{ticket.run_id}", ticket.round)

    def _mask(self, ticket: RoundTicket, length: int, fixed: FixedPoint) -> np.ndarray:
        peers = [p for p in ticket.participants if p != self.site]
        seeds = [(mask_sign(self.site, p), round_seed(self._pair_key(p), ticket.run_id, ticket.round)) for p in peers]
        return combine([*seeds, (1, self._own_seed(ticket))], length, fixed.modulus_bits)

    def protect(self, weights: Mapping[str, torch.Tensor], examples: int, ticket: RoundTicket) -> ProtectedUpdate:
        """Weight, mask, encrypt and sign this site's update for ``ticket``'s round."""
        if self.site not in ticket.participants:
            raise RoundRefused(f"site {self.site} is not among the round's participants {ticket.participants}")
        if examples > ticket.weight_total:
            raise RoundRefused(f"{examples} examples exceed the round's announced total {ticket.weight_total}")
        started = time.perf_counter()
        payload: Payload = weights
        if self.he is not None:
            fixed = ticket.fixed(self.he)
            masked = self.mode == "masked" and masks_apply(ticket)
            mask = self._mask(ticket, Layout.of(weights).size, fixed) if masked else None
            share = examples / ticket.weight_total
            payload = encrypt_weighted(weights, share, self.he, fixed=fixed, mask=mask, workers=self.workers)
        claim = UpdateClaim(
            ticket.run_id, ticket.round, self.site, int(examples), payload_digest(payload), tuple(ticket.participants)
        )
        return ProtectedUpdate(payload, claim, self._sign(claim), time.perf_counter() - started)

    def reveal(self, ticket: RoundTicket, dropped: tuple[str, ...], *, min_sites: int) -> RevealedSeeds:
        """This site's self-mask seed and its seeds with ``dropped`` (sites not in the sum), to unmask the sum.

        Refused when the sum would then hold fewer than ``min_sites`` updates (the site's own
        ``min-train-sites``): unmasking a sum of one update is reading that update, which a
        federation allows only with ``min-train-sites = 1``.
        """
        unknown = sorted(set(dropped) - set(ticket.participants))
        if unknown or self.site in dropped:
            raise RoundRefused(f"unmask request names sites outside the round or this site: {unknown or self.site}")
        remaining = len(ticket.participants) - len(set(dropped))
        if remaining < max(1, min_sites):
            raise RoundRefused(
                f"unmasking would leave {remaining} update(s) in the sum, fewer than min-train-sites = {min_sites}"
            )
        seeds = {p: round_seed(self._pair_key(p), ticket.run_id, ticket.round) for p in sorted(set(dropped))}
        seeds[OWN] = self._own_seed(ticket)
        claim = UpdateClaim(
            ticket.run_id, ticket.round, self.site, 0, RevealedSeeds.digest(seeds), tuple(sorted(dropped)), "unmask"
        )
        return RevealedSeeds(seeds, claim, self._sign(claim))
