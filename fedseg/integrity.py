"""Checksums that let fedseg tell its own files from damaged ones.

``torch.save`` files and JSON carry no checksum of their own: a flipped byte in a tensor or a
digit loads without error and gives a silently wrong value. Files that fedseg writes and reads
back (checkpoints, resume points, manifests, JSON-lines logs and ledgers) therefore carry a
digest of their content, checked on every read. Files without one (written by fedseg before
0.1.1) are read as they are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

DIGEST_KEY = "sha256"
DIGEST_LENGTH = 16  # hex digits kept: detects accidental damage, not an adversary


class DamagedFileError(ValueError):
    """A file fedseg wrote earlier that no longer holds what was written (or never was a fedseg file)."""


def _feed(hasher: Any, value: Any) -> None:
    """Hash ``value`` (nested dicts, lists, tensors, scalars) in one canonical order."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        hasher.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        hasher.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(hasher, key)
            _feed(hasher, value[key])
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{type(value).__name__[0]}{len(value)}".encode())
        for item in value:
            _feed(hasher, item)
    elif isinstance(value, (bytes, bytearray)):
        hasher.update(b"B%d:" % len(value) + bytes(value))
    else:
        hasher.update(f"S{type(value).__name__}:{value!r};".encode())


def digest(value: Any) -> str:
    """A short hex digest of ``value``'s content (tensors by dtype, shape and bytes)."""
    hasher = hashlib.sha256()
    _feed(hasher, value)
    return hasher.hexdigest()[:DIGEST_LENGTH]


def sealed(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with the digest of its content under ``DIGEST_KEY``."""
    return {**payload, DIGEST_KEY: digest(dict(payload))}


def unsealed(
    payload: Any,
    path: str | Path,
    *,
    what: str,
    keys: set[str],
    fix: str,
    optional: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Check a payload read from ``path``: a mapping with ``keys`` (and perhaps ``optional`` ones) whose
    digest matches. Files without a digest (older fedseg) may hold no other keys. Returns the payload
    without its digest; raises ``DamagedFileError`` naming the file and ``fix``."""
    if not isinstance(payload, Mapping):
        raise DamagedFileError(f"{path}: not a fedseg {what} (it holds a {type(payload).__name__}). {fix}")
    content = {k: v for k, v in payload.items() if k != DIGEST_KEY}
    if DIGEST_KEY in payload and payload[DIGEST_KEY] != digest(content):
        raise DamagedFileError(f"{path}: damaged: its content no longer matches its checksum. {fix}")
    missing = sorted(keys - set(content))
    unknown = [] if DIGEST_KEY in payload else sorted(map(str, set(content) - keys - optional))
    if unknown or missing:
        raise DamagedFileError(
            f"{path}: damaged or not a fedseg {what} (unexpected fields {unknown}, missing {missing}). {fix}"
        )
    return content


SEAL_MAGIC = b"FEDSEG-SEALED\x00"
_SHA256_BYTES = 32


def sealed_bytes(data: bytes) -> bytes:
    """``data`` framed for a file: a magic, the data and the SHA-256 of both (any changed byte is found)."""
    body = SEAL_MAGIC + data
    return body + hashlib.sha256(body).digest()


def read_sealed_bytes(path: str | Path, *, what: str, fix: str) -> bytes:
    """The data of a file written with ``sealed_bytes``, checked; files without the frame (older fedseg)
    are returned as they are, for their reader to check."""
    data = Path(path).read_bytes()
    if not data.startswith(SEAL_MAGIC):
        return data
    body, checksum = data[:-_SHA256_BYTES], data[-_SHA256_BYTES:]
    if len(data) < len(SEAL_MAGIC) + _SHA256_BYTES or hashlib.sha256(body).digest() != checksum:
        raise DamagedFileError(f"{path}: damaged {what}: cut or changed since it was written. {fix}")
    return body[len(SEAL_MAGIC) :]


def json_line(record: Mapping[str, Any]) -> str:
    """One JSON-lines record whose first field is the digest of the rest (``{"sha256": ..., ...}``)."""
    if DIGEST_KEY in record:
        raise ValueError(f"a JSON-lines record may not have a field named '{DIGEST_KEY}'")
    return json.dumps({DIGEST_KEY: digest(json.dumps(dict(record))), **record})


def checked_json_line(line: str, path: str | Path, number: int) -> dict[str, Any]:
    """Parse a line written by ``json_line`` (or an older one without digest) and check it."""
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFileError(f"{where}: damaged: not a JSON record ({error}).") from None
    if not isinstance(record, dict):
        raise DamagedFileError(f"{where}: damaged: not a JSON record (a {type(record).__name__}).")
    if DIGEST_KEY not in record:
        first = next(iter(record.items()), (None, None))
        if _looks_like_digest(first[1]):  # the digest's own key was damaged
            raise DamagedFileError(f"{where}: damaged: its checksum field is unreadable.")
        return record
    expected = record.pop(DIGEST_KEY)
    if expected != digest(json.dumps(record)):
        raise DamagedFileError(f"{where}: damaged: the record no longer matches its checksum.")
    return record


def _looks_like_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == DIGEST_LENGTH and all(c in "0123456789abcdef" for c in value)
