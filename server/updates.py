"""Checking who sent an update and what it claims, before anything is aggregated.

An update is refused, alone and with its reason, when it is unsigned or its signature does not
verify against the site registry (with a registry), signed by another site than the node that
described itself, signed for another run or round (a replay), for another set of participants,
over other bytes than it carries (modified, even with a recomputed digest), or when it claims
more examples than the site registered or described, or a weight its examples do not give.
"""

from __future__ import annotations

import math

from fedseg.crypto.packing import EncryptedVector
from fedseg.crypto.protection import OWN, ProtectedUpdate, RevealedSeeds, RoundTicket, payload_digest
from fedseg.crypto.registry import SiteRegistry
from fedseg.crypto.signing import UpdateRejected, verify
from server.aggregators import Contribution


def _check_claim(site: str, claim_site: str, claim_run: str, claim_round: int, ticket: RoundTicket) -> None:
    if claim_site != site:
        raise UpdateRejected(f"signed as site {claim_site}, but sent by the node of site {site}")
    if claim_run != ticket.run_id or claim_round != ticket.round:
        raise UpdateRejected(
            f"replayed: made for round {claim_round} of run {claim_run[:8]}, this is round {ticket.round} "
            f"of run {ticket.run_id[:8]}"
        )


def authenticate(
    update: ProtectedUpdate, *, site: str, ticket: RoundTicket, registry: SiteRegistry | None, max_examples: int
) -> Contribution:
    """The update as a ``Contribution``, or ``UpdateRejected`` naming what is wrong with it."""
    claim = update.claim
    _check_claim(site, claim.site, claim.run_id, claim.round, ticket)
    if claim.kind != "update" or tuple(claim.participants) != tuple(ticket.participants):
        raise UpdateRejected(f"made for participants {list(claim.participants)}, not this round's")
    if payload_digest(update.payload) != claim.payload_digest:
        raise UpdateRejected("payload does not match the digest the site signed (modified in transit)")
    if registry is not None:
        verify(registry, claim, update.signature)
    if claim.examples < 1 or claim.examples > max_examples:
        raise UpdateRejected(
            f"claims {claim.examples} examples, the site registered or described at most {max_examples}"
        )
    if isinstance(update.payload, EncryptedVector):
        expected = claim.examples / ticket.weight_total
        if not math.isclose(update.payload.weight, expected, rel_tol=1e-9):
            raise UpdateRejected(
                f"encrypted weight {update.payload.weight:.6g} is not its {claim.examples} examples "
                f"out of {ticket.weight_total} ({expected:.6g})"
            )
    return Contribution(site, claim.examples, update.payload)


def authenticate_seeds(
    revealed: RevealedSeeds, *, site: str, ticket: RoundTicket, dropped: tuple[str, ...], registry: SiteRegistry | None
) -> RevealedSeeds:
    """A survivor's revealed seeds, checked like an update (signature, run, round, which sites)."""
    claim = revealed.claim
    _check_claim(site, claim.site, claim.run_id, claim.round, ticket)
    if claim.kind != "unmask" or tuple(claim.participants) != tuple(sorted(dropped)):
        raise UpdateRejected("seeds revealed for other sites than those asked for")
    if (
        sorted(revealed.seeds) != sorted([*dropped, OWN])
        or RevealedSeeds.digest(revealed.seeds) != claim.payload_digest
    ):
        raise UpdateRejected("revealed seeds do not match what the site signed")
    if registry is not None:
        verify(registry, claim, revealed.signature)
    return revealed
