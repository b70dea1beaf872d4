"""Encrypted vectors as plain parts (uint8 arrays and a header) for messages, and as bytes for files.

Every way in refuses damaged or foreign input with ``CiphertextRejected`` (never a traceback
from the unpickler or a ``KeyError``): a truncated ``.he`` file, a checkpoint given where a
``.he`` file is expected, a header with missing or mistyped fields.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedseg.crypto.masking import FixedPoint
from fedseg.crypto.packing import CiphertextRejected, EncryptedVector

CHUNK_PREFIX, INTEGER_PREFIX = "c", "i:"
HEADER_KEYS = ("length", "weight", "layout_hash", "fingerprint", "digest", "chunks", "fraction_bits", "range_bits")


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
        "fraction_bits": vector.fixed.fraction_bits,
        "range_bits": vector.fixed.range_bits,
    }
    return arrays, header


def from_parts(arrays: Mapping[str, np.ndarray], header: Mapping[str, Any]) -> EncryptedVector:
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        raise CiphertextRejected(f"encrypted update lacks header fields {missing} (another fedseg version?)")
    names = sorted(k for k in arrays if k.startswith(CHUNK_PREFIX))
    try:
        chunks = tuple(np.asarray(arrays[name], dtype=np.uint8).tobytes() for name in names)
        integers = {
            k[len(INTEGER_PREFIX) :]: torch.from_numpy(np.array(v))
            for k, v in arrays.items()
            if k.startswith(INTEGER_PREFIX)
        }
        fixed = FixedPoint(int(header["fraction_bits"]), int(header["range_bits"]))
        vector = EncryptedVector(
            chunks,
            int(header["length"]),
            float(header["weight"]),
            str(header["layout_hash"]),
            str(header["fingerprint"]),
            str(header["digest"]),
            integers,
            fixed,
        )
    except (TypeError, ValueError, OverflowError) as error:
        raise CiphertextRejected(f"encrypted update has unusable fields ({error})") from None
    if len(chunks) != int(header["chunks"]):
        raise CiphertextRejected(f"has {len(chunks)} ciphertexts, its header says {header['chunks']} (truncated?)")
    return vector


def to_bytes(vector: EncryptedVector, **meta: Any) -> bytes:
    arrays, header = to_parts(vector)
    buffer = io.BytesIO()
    torch.save(
        {"header": header, "arrays": {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, "meta": meta}, buffer
    )
    return buffer.getvalue()


def from_bytes(data: bytes) -> tuple[EncryptedVector, dict[str, Any]]:
    """An encrypted vector and its metadata from ``to_bytes`` output; ``CiphertextRejected`` for anything else."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # damaged archives raise many types (zip, unpickler, struct, unicode)
        raise CiphertextRejected(
            f"not a readable encrypted model (truncated or damaged: {type(error).__name__})"
        ) from None
    if not isinstance(payload, dict) or "arrays" not in payload or "header" not in payload:
        raise CiphertextRejected("holds no encrypted model (a plaintext checkpoint .pt? it needs no decryption)")
    try:
        arrays = {str(k): v.numpy() for k, v in payload["arrays"].items()}
        header = dict(payload["header"])
        meta = dict(payload.get("meta", {}))
    except (AttributeError, TypeError, ValueError) as error:
        raise CiphertextRejected(f"encrypted model has unusable parts ({type(error).__name__})") from None
    return from_parts(arrays, header), meta


FILE_MAGIC = b"FEDSEG-HE-MODEL\x00"
CHECKSUM_BYTES = 32


def file_bytes(vector: EncryptedVector, **meta: Any) -> bytes:
    """``to_bytes`` framed for a file: a magic, the payload and its SHA-256 (any flipped byte is found)."""
    body = FILE_MAGIC + to_bytes(vector, **meta)
    return body + hashlib.sha256(body).digest()


def read_file(path: str | Path) -> tuple[EncryptedVector, dict[str, Any]]:
    """An encrypted model file (``checkpoints/*.he``); errors name the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CiphertextRejected(f"{path}: encrypted model not found (a run's checkpoints/last.he or best.he)")
    data = path.read_bytes()
    if not data.startswith(FILE_MAGIC):
        hint = " (a plaintext checkpoint: use it as it is)" if path.suffix == ".pt" or data[:2] == b"PK" else ""
        raise CiphertextRejected(f"{path}: not an encrypted fedseg model{hint}")
    body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    if len(data) < len(FILE_MAGIC) + CHECKSUM_BYTES or hashlib.sha256(body).digest() != checksum:
        raise CiphertextRejected(
            f"{path}: damaged encrypted model (checksum mismatch: truncated or changed); copy it again from the run"
        )
    try:
        return from_bytes(body[len(FILE_MAGIC) :])
    except CiphertextRejected as error:
        raise CiphertextRejected(f"{path}: {error}") from None
