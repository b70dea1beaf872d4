"""Packing a model's weights into CKKS ciphertexts and back.

The floating-point tensors of a state dict are flattened, in a fixed order, into one vector
whose ``layout_hash`` names the order, shapes and dtypes; integer buffers travel separately in
plaintext (they are never averaged). The vector, multiplied by the site's weight, is put in
fixed point (``fedseg.crypto.masking.FixedPoint``), optionally masked, split into slot-sized
chunks, and each chunk is one ciphertext. An update carries its key-set fingerprint, its weight
and a SHA-256 digest of its bytes; the digest is not a defence against tampering on its own
(anyone can recompute it): the site's signature over it is (``fedseg.crypto.signing``).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts
import torch

from fedseg.crypto.keys import HEContext
from fedseg.crypto.masking import FixedPoint

PARALLEL_MIN_CHUNKS = 64
ABSURD_WEIGHT = 1e4  # a decrypted model weight beyond this means damaged keys or a diverged model


class CiphertextRejected(ValueError):
    """An encrypted update that cannot be added: other keys, other model, damaged or tampered."""


@dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of the floating tensors, in the order they are packed."""

    entries: tuple[tuple[str, tuple[int, ...], str], ...]
    integers: tuple[str, ...] = ()

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> Layout:
        floats = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in state.items() if v.dtype.is_floating_point)
        integers = tuple(k for k, v in state.items() if not v.dtype.is_floating_point)
        return cls(floats, integers)

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for _, shape, _ in self.entries)

    @property
    def hash(self) -> str:
        return hashlib.sha256(repr((self.entries, self.integers)).encode()).hexdigest()[:32]


def flatten(state: Mapping[str, torch.Tensor], layout: Layout) -> np.ndarray:
    """The floating tensors of ``state`` as one float64 vector in layout order."""
    missing = [name for name, _, _ in layout.entries if name not in state]
    if missing:
        raise CiphertextRejected(f"weights lack tensors of the layout: {missing[:3]}")
    return np.concatenate(
        [state[name].detach().cpu().numpy().astype(np.float64).ravel() for name, _, _ in layout.entries]
    )


def unflatten(
    vector: np.ndarray, layout: Layout, integers: Mapping[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    if vector.size < layout.size:
        raise CiphertextRejected(f"decrypted vector has {vector.size} values, the layout needs {layout.size}")
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    offset = 0
    for name, shape, dtype in layout.entries:
        count = math.prod(shape)
        values = vector[offset : offset + count].reshape(shape)
        state[name] = torch.from_numpy(values.copy()).to(getattr(torch, dtype.removeprefix("torch.")))
        offset += count
    for name in layout.integers:
        state[name] = integers[name].clone()
    return state


@dataclass(frozen=True)
class EncryptedVector:
    """What travels: ciphertext chunks of fixed-point ``weight`` x (flattened weights), and how to check them."""

    chunks: tuple[bytes, ...]
    length: int
    weight: float
    layout_hash: str
    fingerprint: str
    digest: str
    integers: Mapping[str, torch.Tensor] = field(default_factory=dict)
    fixed: FixedPoint = FixedPoint(22, 17)

    @property
    def nbytes(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


def digest_of(
    chunks: Sequence[bytes], length: int, weight: float, layout_hash: str, fingerprint: str, fixed: FixedPoint
) -> str:
    hasher = hashlib.sha256(
        f"{length}|{weight!r}|{layout_hash}|{fingerprint}|{fixed.fraction_bits}|{fixed.range_bits}".encode()
    )
    for chunk in chunks:
        hasher.update(len(chunk).to_bytes(8, "little"))
        hasher.update(chunk)
    return hasher.hexdigest()


def _sealed(
    chunks: tuple[bytes, ...],
    length: int,
    weight: float,
    layout_hash: str,
    he: HEContext,
    fixed: FixedPoint,
    integers: Mapping[str, torch.Tensor],
) -> EncryptedVector:
    digest = digest_of(chunks, length, weight, layout_hash, he.fingerprint, fixed)
    return EncryptedVector(chunks, length, weight, layout_hash, he.fingerprint, digest, dict(integers), fixed)


_WORKER_CONTEXT: ts.Context | None = None


def _init_worker(serialized: bytes) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = ts.context_from(serialized)


def _encrypt_chunk(values: np.ndarray) -> bytes:
    if _WORKER_CONTEXT is None:
        raise RuntimeError("encryption worker started without a context")
    return ts.ckks_vector(_WORKER_CONTEXT, values).serialize()


def _encrypt_chunks(pieces: list[np.ndarray], he: HEContext, workers: int) -> list[bytes]:
    if workers <= 1 or len(pieces) < PARALLEL_MIN_CHUNKS:
        return [ts.ckks_vector(he.context, piece).serialize() for piece in pieces]
    # the workers are this site's own processes: they get the key the site encrypts with
    serialized = he.context.serialize(
        save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(serialized,)) as pool:
        return list(pool.map(_encrypt_chunk, pieces, chunksize=max(1, len(pieces) // (4 * workers))))


def _chunked(vector: np.ndarray, slots: int) -> list[np.ndarray]:
    return [vector[start : start + slots] for start in range(0, vector.size, slots)]


def encrypt_weighted(
    state: Mapping[str, torch.Tensor],
    weight: float,
    he: HEContext,
    *,
    fixed: FixedPoint,
    mask: np.ndarray | None = None,
    workers: int | None = None,
) -> EncryptedVector:
    """Encrypt ``weight`` x the floating weights of ``state`` (a site's update) in fixed point, plus ``mask``.

    ``mask`` (integers modulo 2^fixed.modulus_bits, one per value) is what makes one update
    unreadable on its own; the masks of a round's participants cancel in the sum.
    """
    if not 0 < weight <= 1:
        raise ValueError(f"an update's weight is its share of the round's examples, in (0, 1]; got {weight}")
    layout = Layout.of(state)
    values = flatten(state, layout)
    largest = float(np.abs(values).max(initial=0.0))
    if not largest < fixed.limit:  # then any weighted sum (shares adding up to <= 1) decodes too
        raise ValueError(
            f"the update's weights reach {largest:.3g}, beyond what the encrypted sum holds for this many sites "
            f"({fixed.limit:.3g}): the model has diverged, or use keys with a larger first modulus"
        )
    integers = fixed.encode(values * weight)
    if mask is not None:
        if mask.shape != integers.shape:
            raise ValueError(f"mask has {mask.size} values, the update {integers.size}")
        integers = (integers + mask) & np.uint64(2**fixed.modulus_bits - 1)
    pieces = _chunked(fixed.to_slots(integers), he.parameters.slots)
    chunks = tuple(_encrypt_chunks(pieces, he, workers if workers is not None else min(4, os.cpu_count() or 1)))
    plain_integers = {name: state[name].detach().cpu().clone() for name in layout.integers}
    return _sealed(chunks, integers.size, float(weight), layout.hash, he, fixed, plain_integers)


def check_update(
    update: EncryptedVector, *, fingerprint: str, layout_hash: str, length: int, slots: int, fixed: FixedPoint
) -> None:
    """Refuse an update built on other keys, for another model or fixed point, or damaged in transit."""
    if update.fingerprint != fingerprint:
        raise CiphertextRejected(
            f"built on other keys (fingerprint {update.fingerprint[:12]}, this federation uses {fingerprint[:12]})"
        )
    if update.layout_hash != layout_hash or update.length != length:
        raise CiphertextRejected("encrypts another model layout than the federation's")
    if update.fixed != fixed:
        raise CiphertextRejected(f"uses fixed point {update.fixed}, the federation {fixed} (another site count?)")
    if len(update.chunks) != math.ceil(length / slots):
        raise CiphertextRejected(
            f"has {len(update.chunks)} ciphertexts, {math.ceil(length / slots)} expected (truncated?)"
        )
    expected = digest_of(update.chunks, update.length, update.weight, update.layout_hash, update.fingerprint, fixed)
    if expected != update.digest:
        raise CiphertextRejected("ciphertext bytes do not match their digest (damaged in transit)")
    if not 0 < update.weight <= 1 + 1e-9:
        raise CiphertextRejected(f"weight {update.weight} is not a share of the round's examples in (0, 1]")


def _load_chunk(data: bytes, he: HEContext, expected: int) -> ts.CKKSVector:
    try:
        vector = ts.ckks_vector_from(he.context, data)
    except Exception as error:  # TenSEAL raises several types for damaged input
        raise CiphertextRejected(f"a ciphertext does not deserialise ({type(error).__name__})") from None
    if vector.size() != expected:
        raise CiphertextRejected(f"a ciphertext holds {vector.size()} values, {expected} expected")
    return vector


def _sizes(length: int, slots: int) -> list[int]:
    return [min(slots, length - start) for start in range(0, length, slots)]


def _added(totals: list[ts.CKKSVector] | None, vectors: list[ts.CKKSVector]) -> list[ts.CKKSVector]:
    if totals is None:
        return vectors
    try:
        return [total + vector for total, vector in zip(totals, vectors)]
    except Exception as error:  # another scale or level: TenSEAL raises ValueError or RuntimeError
        raise CiphertextRejected(f"cannot be added to the others ({type(error).__name__}: {error})") from None


def add_encrypted(
    updates: Sequence[EncryptedVector], he: HEContext, *, layout_hash: str, length: int, fixed: FixedPoint
) -> tuple[EncryptedVector | None, dict[int, str]]:
    """Sum the acceptable updates ciphertext by ciphertext (the server's whole job) and their weights.

    Every check, the addition included, happens before an update counts: one that fails leaves
    the sum of the others untouched. Returns the encrypted sum (None if nothing was acceptable)
    and, by index, why updates were refused.
    """
    slots = he.parameters.slots
    rejected: dict[int, str] = {}
    totals: list[ts.CKKSVector] | None = None
    weight, integers = 0.0, None
    for index, update in enumerate(updates):
        try:
            check_update(
                update, fingerprint=he.fingerprint, layout_hash=layout_hash, length=length, slots=slots, fixed=fixed
            )
            vectors = [_load_chunk(chunk, he, size) for chunk, size in zip(update.chunks, _sizes(length, slots))]
            totals = _added(totals, vectors)
        except CiphertextRejected as error:
            rejected[index] = str(error)
            continue
        weight += update.weight
        integers = integers if integers is not None else update.integers
    if totals is None:
        return None, rejected
    chunks = tuple(total.serialize() for total in totals)
    return _sealed(chunks, length, weight, layout_hash, he, fixed, integers or {}), rejected


def add_plain(total: EncryptedVector, integers: np.ndarray, he: HEContext) -> EncryptedVector:
    """Add plaintext fixed-point ``integers`` (e.g. minus the masks of sites that dropped out) to a sum."""
    slots = he.parameters.slots
    values = _chunked(total.fixed.to_slots(integers), slots)
    chunks = tuple(
        (_load_chunk(chunk, he, size) + piece.tolist()).serialize()
        for chunk, size, piece in zip(total.chunks, _sizes(total.length, slots), values)
    )
    return _sealed(chunks, total.length, total.weight, total.layout_hash, he, total.fixed, total.integers)


def decrypt_average(encrypted: EncryptedVector, he: HEContext, layout: Layout) -> OrderedDict[str, torch.Tensor]:
    """A site's side: decrypt the sum, divide by the total weight, and unpack into a state dict.

    Refuses a result that is not finite or holds absurd weights (damaged keys or ciphertexts).
    """
    if not he.can_decrypt:
        raise PermissionError("this context holds no secret key: only sites can decrypt")
    slots = he.parameters.slots
    check_update(
        encrypted,
        fingerprint=he.fingerprint,
        layout_hash=layout.hash,
        length=layout.size,
        slots=slots,
        fixed=encrypted.fixed,
    )
    decrypted = np.concatenate(
        [
            np.asarray(_load_chunk(chunk, he, size).decrypt(), dtype=np.float64)
            for chunk, size in zip(encrypted.chunks, _sizes(layout.size, slots))
        ]
    )
    values = encrypted.fixed.decode(decrypted) / encrypted.weight
    largest = float(np.abs(values).max(initial=0.0))
    if not math.isfinite(largest) or largest > ABSURD_WEIGHT:
        raise CiphertextRejected(
            f"decrypts to weights up to {largest:.3g} (limit {ABSURD_WEIGHT:g}): damaged keys or ciphertexts, "
            "or an incomplete sum whose masks did not cancel"
        )
    return unflatten(values, layout, encrypted.integers)
