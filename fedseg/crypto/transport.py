"""Encrypted vectors as plain parts (uint8 arrays and a header) for messages, and as bytes for files."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fedseg.crypto.packing import CiphertextRejected, EncryptedVector

CHUNK_PREFIX, INTEGER_PREFIX = "c", "i:"
HEADER_KEYS = ("length", "weight", "layout_hash", "fingerprint", "digest", "chunks")


def to_parts(vector: EncryptedVector) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {f"{CHUNK_PREFIX}{i:06d}": np.frombuffer(chunk, dtype=np.uint8) for i, chunk in enumerate(vector.chunks)}
    arrays.update({f"{INTEGER_PREFIX}{name}": value.numpy() for name, value in vector.integers.items()})
    header = {
        "length": vector.length,
        "weight": vector.weight,
        "layout_hash": vector.layout_hash,
        "fingerprint": vector.fingerprint,
        "digest": vector.digest,
        "chunks": len(vector.chunks),
    }
    return arrays, header


def from_parts(arrays: Mapping[str, np.ndarray], header: Mapping[str, Any]) -> EncryptedVector:
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        raise CiphertextRejected(f"encrypted update lacks header fields {missing}")
    names = sorted(k for k in arrays if k.startswith(CHUNK_PREFIX))
    chunks = tuple(np.asarray(arrays[name], dtype=np.uint8).tobytes() for name in names)
    integers = {
        k[len(INTEGER_PREFIX) :]: torch.from_numpy(np.array(v))
        for k, v in arrays.items()
        if k.startswith(INTEGER_PREFIX)
    }
    return EncryptedVector(
        chunks,
        int(header["length"]),
        float(header["weight"]),
        str(header["layout_hash"]),
        str(header["fingerprint"]),
        str(header["digest"]),
        integers,
    )


def to_bytes(vector: EncryptedVector, **meta: Any) -> bytes:
    arrays, header = to_parts(vector)
    buffer = io.BytesIO()
    torch.save(
        {"header": header, "arrays": {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, "meta": meta}, buffer
    )
    return buffer.getvalue()


def from_bytes(data: bytes) -> tuple[EncryptedVector, dict[str, Any]]:
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    arrays = {k: v.numpy() for k, v in payload["arrays"].items()}
    return from_parts(arrays, payload["header"]), dict(payload.get("meta", {}))
