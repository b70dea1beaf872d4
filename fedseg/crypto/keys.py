"""Key provisioning: ``fedseg keys --out DIR`` writes a site context and a server context.

Files are a small fedseg container (magic, JSON header, TenSEAL context bytes, SHA-256 of all
that before it)::

    site.context     secret key inside: file mode 0600; for the sites (and the held-out evaluator),
                     never for the aggregator. With pairwise masks (``fedseg.crypto.masking``) it
                     opens only masked updates and the aggregate, never one site's update
    server.context   parameters only: it can add ciphertexts but neither encrypt nor decrypt
    fingerprint.txt  the key set's fingerprint; sites and server refuse peers with another one

A flipped byte anywhere in a key file is refused at load (checksum), and a site context must
decrypt a known test vector before it is used. Sites encrypt with the secret key (SEAL's
symmetric encryption: the same size as public-key ciphertexts, 11x less noise).

Default parameters (poly modulus degree 8192, coefficient moduli [56, 36] bits, scale 2^36)
are 128-bit secure (92 of the 218 bits SEAL allows at this degree), cost 7.6x the fp32 size per
value, hold weighted values up to 2^18, and decrypt a sum of updates to within about 3e-8 of
the plaintext weighted average even for small weights (additions only, so no Galois or
relinearisation keys are needed). Measured alternatives at degree 8192: [50, 30] / 2^30 is 7.2x
but errs up to 2e-6; [60, 40] / 2^40 errs 2e-9 but is 8.0x.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import tenseal as ts

from fedseg.files import atomic_write_bytes, atomic_write_text

MAGIC = b"FEDSEG-HE\x00"
CHECKSUM_BYTES = 32
FORMAT_VERSION = 2
TEST_VECTOR = (0.5, -1.25, 3.0, 1e-3)
SITE_FILE, SERVER_FILE, FINGERPRINT_FILE = "site.context", "server.context", "fingerprint.txt"


class HEKeyError(ValueError):
    """A key file that is missing, damaged, of the wrong kind, or from another key set."""


@dataclass(frozen=True)
class HEParameters:
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (56, 36)
    scale_bits: int = 36

    def __post_init__(self) -> None:
        if self.poly_modulus_degree not in (4096, 8192, 16384, 32768):
            raise ValueError(f"poly modulus degree must be 4096, 8192, 16384 or 32768, got {self.poly_modulus_degree}")
        if len(self.coeff_mod_bit_sizes) < 2:
            raise ValueError("coefficient moduli need at least two primes (data and special), e.g. [56, 36]")
        if not 20 <= self.scale_bits < self.coeff_mod_bit_sizes[0]:
            raise ValueError(
                f"scale bits must be >= 20 and below the first modulus "
                f"({self.coeff_mod_bit_sizes[0]} bits), got {self.scale_bits}"
            )

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def max_abs_value(self) -> float:
        """Largest |value| an encrypted slot holds safely (leaving a bit of headroom)."""
        return float(2 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 2))


@dataclass(frozen=True)
class HEContext:
    """A loaded TenSEAL context with its kind (site or server), parameters and key-set fingerprint."""

    context: ts.Context
    kind: str
    parameters: HEParameters
    fingerprint: str

    @property
    def can_decrypt(self) -> bool:
        return bool(self.context.has_secret_key())


def _pack(header: dict, payload: bytes) -> bytes:
    encoded = json.dumps(header, sort_keys=True).encode()
    body = MAGIC + struct.pack(">I", len(encoded)) + encoded + payload
    return body + hashlib.sha256(body).digest()


def _damaged(path: Path, what: str) -> HEKeyError:
    return HEKeyError(
        f"{path}: damaged key file ({what}); copy it again from where it was made, or make a new key set "
        "with `fedseg keys` (all sites and the aggregator must then use the new one)"
    )


def _unpack(data: bytes, path: Path) -> tuple[dict, bytes]:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise HEKeyError(f"{path}: not a fedseg key file (made by `fedseg keys`)")
    (length,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start : start + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _damaged(path, "unreadable header") from None
    if not isinstance(header, dict):
        raise _damaged(path, "unreadable header")
    payload = data[start + length :]
    if int(header.get("version", 1)) >= 2:
        body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if len(payload) < CHECKSUM_BYTES or hashlib.sha256(body).digest() != checksum:
            raise _damaged(path, "checksum mismatch: truncated or changed")
        payload = payload[:-CHECKSUM_BYTES]
    return header, payload


def _fingerprint(key_id: str, parameters: HEParameters) -> str:
    return hashlib.sha256(json.dumps({"key_id": key_id, **asdict(parameters)}, sort_keys=True).encode()).hexdigest()[
        :32
    ]


def generate_keys(out: str | Path, parameters: HEParameters = HEParameters()) -> str:
    """Write a new key set to ``out``; returns its fingerprint. Refuses to overwrite an existing one."""
    out = Path(out)
    if (out / SITE_FILE).exists() or (out / SERVER_FILE).exists():
        raise FileExistsError(f"{out}: holds keys already; choose another folder (never overwrite keys in use)")
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=parameters.poly_modulus_degree,
        coeff_mod_bit_sizes=list(parameters.coeff_mod_bit_sizes),
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    context.global_scale = 2.0**parameters.scale_bits
    key_id = secrets.token_hex(16)
    fingerprint = _fingerprint(key_id, parameters)
    header = {
        "format": "fedseg-he-context",
        "version": FORMAT_VERSION,
        "key_id": key_id,
        "fingerprint": fingerprint,
        "parameters": asdict(parameters),
    }
    site = context.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    server = context.serialize(
        save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / SITE_FILE, _pack({**header, "kind": "site"}, site), mode=0o600)
    atomic_write_bytes(out / SERVER_FILE, _pack({**header, "kind": "server"}, server), mode=0o644)
    atomic_write_text(out / FINGERPRINT_FILE, fingerprint + "\n")
    return fingerprint


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, expect: str) -> HEContext:
    return _load(Path(path), expect)


def load_context(path: str | Path, *, expect: str) -> HEContext:
    """Load a site (``expect="site"``) or server (``expect="server"``) context, checking its kind.

    A server context that holds a secret key is refused: the aggregator must never be able to decrypt.
    Loaded contexts are cached per file (and its modification time) within a process.
    """
    path = Path(path)
    if not path.is_file():
        raise HEKeyError(f"{path}: key file not found; make keys with `fedseg keys --out DIR`")
    return _load_cached(str(path.resolve()), path.stat().st_mtime_ns, expect)


def _parameters(header: dict, path: Path) -> HEParameters:
    try:
        values = dict(header["parameters"])
        parameters = HEParameters(**{**values, "coeff_mod_bit_sizes": tuple(values["coeff_mod_bit_sizes"])})
        fingerprint_ok = _fingerprint(str(header["key_id"]), parameters) == header["fingerprint"]
    except (KeyError, TypeError, ValueError):
        raise _damaged(path, "header fields missing or invalid") from None
    if not fingerprint_ok:
        raise HEKeyError(f"{path}: the header's fingerprint does not match its parameters (edited file?)")
    return parameters


def _check_test_decryption(context: ts.Context, path: Path) -> None:
    """A known vector must survive encryption and decryption (catches key data damaged before checksums)."""
    try:
        values = ts.ckks_vector(context, list(TEST_VECTOR)).decrypt()
    except Exception as error:  # TenSEAL raises several types on damaged keys
        raise _damaged(path, f"test decryption failed: {type(error).__name__}") from None
    if len(values) != len(TEST_VECTOR) or max(abs(a - b) for a, b in zip(values, TEST_VECTOR)) > 1e-4:
        raise _damaged(path, "the secret key does not decrypt a known test vector")


def _load(path: Path, expect: str) -> HEContext:
    header, payload = _unpack(path.read_bytes(), path)
    if header.get("kind") != expect:
        raise HEKeyError(f"{path}: is a {header.get('kind')} context, but a {expect} context is needed here")
    parameters = _parameters(header, path)
    try:
        context = ts.context_from(payload)
    except Exception as error:  # TenSEAL raises several types for damaged input
        raise _damaged(path, f"TenSEAL cannot read it: {type(error).__name__}") from None
    if expect == "server" and context.has_secret_key():
        raise HEKeyError(f"{path}: a server context must not hold a secret key")
    if expect == "site" and not context.has_secret_key():
        raise HEKeyError(f"{path}: this site context has no secret key; copy site.context from `fedseg keys`")
    context.global_scale = 2.0**parameters.scale_bits
    if expect == "site":
        _check_test_decryption(context, path)
    return HEContext(context=context, kind=expect, parameters=parameters, fingerprint=str(header["fingerprint"]))


def key_file_mode(path: str | Path) -> int:
    return os.stat(path).st_mode & 0o777
