"""Fixed-point encoding and pairwise masks that cancel only in the sum (secure aggregation).

A site's weighted update is rounded to a grid of ``2^-fraction_bits`` and taken modulo
``2^modulus_bits`` (``FixedPoint``). With masks, site *i* adds, for every other participant *j*
of the round, ``+PRG(seed_ij)`` if its name sorts before *j*'s and ``-PRG(seed_ij)`` otherwise,
modulo ``2^modulus_bits``: each masked update is uniformly random on its own (whoever decrypts
it learns nothing), and the masks cancel exactly in the sum of all participants. The result is
then CKKS-encrypted as real numbers; CKKS's small error is removed by rounding to the grid.

The capacity accounts for the number of sites: every encrypted value lies in
``[-2^(range_bits-1), 2^(range_bits-1))`` and the sum of ``max_sites`` of them (plus one
correction for sites that dropped out) stays inside what the CKKS parameters decode.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedseg.crypto.keys import HEParameters

SEED_BYTES = 32


@dataclass(frozen=True)
class FixedPoint:
    """Values on a grid of ``2^-fraction_bits`` in ``[-2^(range_bits-1), 2^(range_bits-1))``, modulo 2^bits."""

    fraction_bits: int
    range_bits: int

    def __post_init__(self) -> None:
        if not (8 <= self.fraction_bits <= 40 and 2 <= self.range_bits and self.modulus_bits <= 62):
            raise ValueError(f"unusable fixed point: {self.fraction_bits} fraction bits, {self.range_bits} range bits")

    @classmethod
    def for_sites(cls, parameters: HEParameters, max_sites: int) -> FixedPoint:
        """The widest range whose sum over ``max_sites`` values and one correction CKKS still decodes."""
        if max_sites < 1:
            raise ValueError(f"max_sites must be >= 1, got {max_sites}")
        capacity_bits = int(math.log2(parameters.max_abs_value)) + 1  # the sum lies in +-2^capacity_bits / 2
        return cls(
            fraction_bits=parameters.scale_bits - 14, range_bits=capacity_bits - math.ceil(math.log2(max_sites + 1))
        )

    @property
    def modulus_bits(self) -> int:
        return self.fraction_bits + self.range_bits

    @property
    def limit(self) -> float:
        """Largest |value| one update may hold."""
        return float(2 ** (self.range_bits - 1))

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Values (float) to grid integers modulo 2^modulus_bits (uint64). Refuses values out of range."""
        largest = float(np.abs(values).max(initial=0.0))
        if not math.isfinite(largest) or largest >= self.limit:
            raise ValueError(
                f"weighted update reaches {largest:.3g}, beyond what the encrypted sum holds for this many sites "
                f"({self.limit:.3g}); the model's weights have diverged, or use keys with a larger first modulus"
            )
        scaled = np.rint(values * float(2**self.fraction_bits)).astype(np.int64)
        return scaled.astype(np.uint64) & np.uint64(2**self.modulus_bits - 1)

    def to_slots(self, integers: np.ndarray) -> np.ndarray:
        """Integers modulo 2^bits as centred real numbers, the values CKKS encrypts."""
        return self._centred(integers).astype(np.float64) / float(2**self.fraction_bits)

    def decode(self, slots: np.ndarray) -> np.ndarray:
        """A decrypted sum (real numbers near the grid) back to float values: round, reduce, centre."""
        integers = np.rint(np.asarray(slots, dtype=np.float64) * float(2**self.fraction_bits)).astype(np.int64)
        return self._centred(integers.astype(np.uint64) & np.uint64(2**self.modulus_bits - 1)).astype(
            np.float64
        ) / float(2**self.fraction_bits)

    def _centred(self, integers: np.ndarray) -> np.ndarray:
        half, full = 2 ** (self.modulus_bits - 1), 2**self.modulus_bits
        signed = integers.astype(np.int64)
        return np.where(signed >= half, signed - full, signed)


def round_seed(pair_key: bytes, run_id: str, server_round: int) -> bytes:
    """The pair's mask seed for one round of one run: revealing it opens nothing else."""
    return hmac.new(pair_key, f"fedseg-mask|{run_id}|{server_round}".encode(), hashlib.sha256).digest()


def expand(seed: bytes, length: int, modulus_bits: int) -> np.ndarray:
    """``length`` uniform integers modulo 2^modulus_bits from a 32-byte seed (AES-256 in counter mode)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed has {SEED_BYTES} bytes, got {len(seed)}")
    stream = Cipher(algorithms.AES(seed), modes.CTR(b"\0" * 16)).encryptor().update(b"\0" * (8 * length))
    return np.frombuffer(stream, dtype=np.uint64) & np.uint64(2**modulus_bits - 1)


def mask_sign(own: str, peer: str) -> int:
    """+1 for the site whose name sorts first in the pair, -1 for the other: the two masks cancel."""
    if own == peer:
        raise ValueError(f"a site has no mask with itself ({own})")
    return 1 if own < peer else -1


def combine(signed_seeds: Iterable[tuple[int, bytes]], length: int, modulus_bits: int) -> np.ndarray:
    """Sum of ``sign x PRG(seed)`` modulo 2^modulus_bits."""
    total = np.zeros(length, dtype=np.uint64)
    for sign, seed in signed_seeds:
        stream = expand(seed, length, modulus_bits)
        total = total + stream if sign > 0 else total - stream  # uint64 arithmetic wraps modulo 2^64
    return total & np.uint64(2**modulus_bits - 1)
