"""Signed updates and pairwise mask keys, from each site's node key (EC P-384).

A site signs an ``UpdateClaim`` (run, round, site, examples, the round's participants and a
digest of the payload, plaintext weights or ciphertexts) with its node key; the aggregator
verifies it against the site registry. A claim for another run or round (a replay), from
another key (a forgery), or over other bytes (a modified update, even with a recomputed
digest) fails. The same key derives, by ECDH with another site's registered public key, the
secret that seeds that pair's masks; ECDSA signatures and ECDH secrets are separated by HKDF.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedseg.crypto.registry import SiteRegistry


class UpdateRejected(ValueError):
    """An update (or reply) the aggregator refuses: unsigned, forged, replayed, over-weighted, or unusable."""


@dataclass(frozen=True)
class UpdateClaim:
    """What a site vouches for with its signature."""

    run_id: str
    round: int
    site: str
    examples: int
    payload_digest: str
    participants: tuple[str, ...] = ()
    kind: str = "update"  # "update", or "unmask" for a dropout-recovery reply

    def message(self) -> bytes:
        return json.dumps({"fedseg-claim": 1, **asdict(self)}, sort_keys=True).encode()


def sign(key: ec.EllipticCurvePrivateKey, claim: UpdateClaim) -> bytes:
    return key.sign(claim.message(), ec.ECDSA(hashes.SHA384()))


def verify(registry: SiteRegistry, claim: UpdateClaim, signature: bytes | None) -> None:
    """Raise ``UpdateRejected`` unless ``signature`` is the registered key of ``claim.site`` over ``claim``."""
    if not signature:
        raise UpdateRejected("unsigned (this federation has a site registry: every update must be signed)")
    if claim.site not in registry.sites:
        raise UpdateRejected(f"signed as site {claim.site}, which is not in the site registry")
    try:
        registry.site(claim.site).key().verify(signature, claim.message(), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise UpdateRejected(
            "signature does not match (forged, modified in transit, or for another run or round)"
        ) from None


def pair_key(own: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey, names: tuple[str, str]) -> bytes:
    """The secret two sites share (ECDH, then HKDF bound to both names): seeds their masks."""
    shared = own.exchange(ec.ECDH(), peer)
    info = ("fedseg-pair-mask|" + "|".join(sorted(names))).encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"fedseg-pairwise-v1", info=info).derive(shared)
