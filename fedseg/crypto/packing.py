"""Packing a model's weights into CKKS ciphertexts and back.

The floating-point tensors of a state dict are flattened, in a fixed order, into one vector
whose ``layout_hash`` names the order, shapes and dtypes; integer buffers travel separately in
plaintext (they are never averaged). The vector is split into slot-sized chunks and each chunk
is one ciphertext. An update carries its key-set fingerprint, its weight and a SHA-256 digest
of its bytes, so the server can refuse one built on other keys, for another model, or damaged
on the way.
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

PARALLEL_MIN_CHUNKS = 64


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
    """What travels: ciphertext chunks of ``weight`` x (flattened weights), and how to check them."""

    chunks: tuple[bytes, ...]
    length: int
    weight: float
    layout_hash: str
    fingerprint: str
    digest: str
    integers: Mapping[str, torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


def digest_of(chunks: Sequence[bytes], length: int, weight: float, layout_hash: str, fingerprint: str) -> str:
    hasher = hashlib.sha256(f"{length}|{weight!r}|{layout_hash}|{fingerprint}".encode())
    for chunk in chunks:
        hasher.update(len(chunk).to_bytes(8, "little"))
        hasher.update(chunk)
    return hasher.hexdigest()


_WORKER_CONTEXT: ts.Context | None = None


def _init_worker(serialized: bytes) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = ts.context_from(serialized)


def _encrypt_chunk(values: np.ndarray) -> bytes:
    assert _WORKER_CONTEXT is not None
    return ts.ckks_vector(_WORKER_CONTEXT, values).serialize()


def _encrypt_chunks(pieces: list[np.ndarray], he: HEContext, workers: int) -> list[bytes]:
    if workers <= 1 or len(pieces) < PARALLEL_MIN_CHUNKS:
        return [ts.ckks_vector(he.context, piece).serialize() for piece in pieces]
    serialized = he.context.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(serialized,)) as pool:
        return list(pool.map(_encrypt_chunk, pieces, chunksize=max(1, len(pieces) // (4 * workers))))


def encrypt_weighted(
    state: Mapping[str, torch.Tensor], weight: float, he: HEContext, *, workers: int | None = None
) -> EncryptedVector:
    """Encrypt ``weight`` x the floating weights of ``state`` (a site's update), chunk by chunk."""
    if not (weight > 0 and math.isfinite(weight)):
        raise ValueError(f"an update's weight must be a positive number, got {weight}")
    layout = Layout.of(state)
    vector = flatten(state, layout) * weight
    largest = float(np.abs(vector).max(initial=0.0))
    if largest > he.parameters.max_abs_value:
        raise ValueError(
            f"weighted update reaches {largest:.3g}, beyond what the CKKS parameters hold "
            f"({he.parameters.max_abs_value:.3g}); use keys with a larger first modulus"
        )
    slots = he.parameters.slots
    pieces = [vector[start : start + slots] for start in range(0, vector.size, slots)]
    chunks = tuple(_encrypt_chunks(pieces, he, workers if workers is not None else min(4, os.cpu_count() or 1)))
    integers = {name: state[name].detach().cpu().clone() for name in layout.integers}
    return EncryptedVector(
        chunks,
        vector.size,
        float(weight),
        layout.hash,
        he.fingerprint,
        digest_of(chunks, vector.size, float(weight), layout.hash, he.fingerprint),
        integers,
    )


def check_update(update: EncryptedVector, *, fingerprint: str, layout_hash: str, length: int, slots: int) -> None:
    """Refuse an update built on other keys, for another model, or damaged in transit."""
    if update.fingerprint != fingerprint:
        raise CiphertextRejected(
            f"built on other keys (fingerprint {update.fingerprint[:12]}, this federation uses {fingerprint[:12]})"
        )
    if update.layout_hash != layout_hash or update.length != length:
        raise CiphertextRejected("encrypts another model layout than the federation's")
    if len(update.chunks) != math.ceil(length / slots):
        raise CiphertextRejected(
            f"has {len(update.chunks)} ciphertexts, {math.ceil(length / slots)} expected (truncated?)"
        )
    if digest_of(update.chunks, update.length, update.weight, update.layout_hash, update.fingerprint) != update.digest:
        raise CiphertextRejected("ciphertext bytes do not match their digest (damaged or tampered in transit)")
    if not (update.weight > 0 and math.isfinite(update.weight)):
        raise CiphertextRejected(f"weight {update.weight} is not a positive number")


def _load_chunk(data: bytes, he: HEContext, expected: int) -> ts.CKKSVector:
    try:
        vector = ts.ckks_vector_from(he.context, data)
    except Exception as error:  # TenSEAL raises several types for damaged input
        raise CiphertextRejected(f"a ciphertext does not deserialise ({type(error).__name__})") from None
    if vector.size() != expected:
        raise CiphertextRejected(f"a ciphertext holds {vector.size()} values, {expected} expected")
    return vector


def add_encrypted(
    updates: Sequence[EncryptedVector], he: HEContext, *, layout_hash: str, length: int
) -> tuple[EncryptedVector | None, dict[int, str]]:
    """Sum the acceptable updates ciphertext by ciphertext (the server's whole job) and their weights.

    Returns the encrypted sum (None if nothing was acceptable) and, by index, why updates were refused.
    """
    slots = he.parameters.slots
    sizes = [min(slots, length - start) for start in range(0, length, slots)]
    rejected: dict[int, str] = {}
    totals: list[ts.CKKSVector] | None = None
    weight, integers = 0.0, None
    for index, update in enumerate(updates):
        try:
            check_update(update, fingerprint=he.fingerprint, layout_hash=layout_hash, length=length, slots=slots)
            vectors = [_load_chunk(chunk, he, size) for chunk, size in zip(update.chunks, sizes)]
        except CiphertextRejected as error:
            rejected[index] = str(error)
            continue
        if totals is None:
            totals, integers = vectors, update.integers
        else:
            for total, vector in zip(totals, vectors):
                total += vector
        weight += update.weight
    if totals is None:
        return None, rejected
    chunks = tuple(total.serialize() for total in totals)
    summed = EncryptedVector(
        chunks,
        length,
        weight,
        layout_hash,
        he.fingerprint,
        digest_of(chunks, length, weight, layout_hash, he.fingerprint),
        dict(integers or {}),
    )
    return summed, rejected


def decrypt_average(encrypted: EncryptedVector, he: HEContext, layout: Layout) -> OrderedDict[str, torch.Tensor]:
    """The site's side: decrypt the sum, divide by the total weight, and unpack into a state dict."""
    if not he.can_decrypt:
        raise PermissionError("this context holds no secret key: only sites can decrypt")
    check_update(
        encrypted, fingerprint=he.fingerprint, layout_hash=layout.hash, length=layout.size, slots=he.parameters.slots
    )
    sizes = [min(he.parameters.slots, layout.size - start) for start in range(0, layout.size, he.parameters.slots)]
    values = np.concatenate(
        [
            np.asarray(_load_chunk(chunk, he, size).decrypt(), dtype=np.float64)
            for chunk, size in zip(encrypted.chunks, sizes)
        ]
    )
    return unflatten(values / encrypted.weight, layout, encrypted.integers)
