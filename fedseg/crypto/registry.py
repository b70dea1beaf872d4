"""The site registry: which public key speaks for which site (``fedseg registry``).

A JSON file, public, the same at the aggregator and at every site::

    {"format": "fedseg-site-registry", "version": 1,
     "sites": {"STARE": {"public-key": "ecdsa-sha2-nistp384 AAAA... fedseg-STARE", "max-examples": 40}, ...}}

The public keys are the sites' SuperNode keys (``fedseg node-key``), the same ones registered
with the SuperLink. The aggregator checks every update's signature against the key of the site
it claims to come from, and bounds its claimed number of examples by ``max-examples`` (0: only
by what the site described at the start of the run). Sites derive their pairwise mask keys from
their own private key and the others' public keys (``fedseg.crypto.signing.pair_key``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedseg.files import atomic_write_text

FORMAT = "fedseg-site-registry"
DIGEST_KEY = "sha256"  # of the rest of the file: a changed bound or key is found, not used


class RegistryError(ValueError):
    """A site registry or node key file that cannot be used (names the file and the fix)."""


@dataclass(frozen=True)
class RegisteredSite:
    name: str
    public_key: str  # OpenSSH text, as `fedseg node-key` writes it
    max_examples: int = 0

    def __post_init__(self) -> None:
        if self.max_examples < 0:
            raise RegistryError(f"site {self.name}: max-examples must be >= 0, got {self.max_examples}")

    def key(self) -> ec.EllipticCurvePublicKey:
        try:
            key = serialization.load_ssh_public_key(self.public_key.encode())
        except (ValueError, TypeError, IndexError) as error:
            raise RegistryError(f"site {self.name}: its public key does not parse ({error})") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise RegistryError(f"site {self.name}: its key is not an EC key (make it with `fedseg node-key`)")
        return key


@dataclass(frozen=True)
class SiteRegistry:
    sites: Mapping[str, RegisteredSite]
    source: str = "<memory>"

    @property
    def fingerprint(self) -> str:
        text = json.dumps({n: s.public_key for n, s in sorted(self.sites.items())}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def site(self, name: str) -> RegisteredSite:
        if name not in self.sites:
            raise RegistryError(f"site {name} is not in the site registry {self.source}; add it with `fedseg registry`")
        return self.sites[name]

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": 1,
            "sites": {
                n: {"public-key": s.public_key, "max-examples": s.max_examples} for n, s in sorted(self.sites.items())
            },
        }


def site_name_of(public_key_file: Path) -> str:
    """``STARE.pub`` -> ``STARE`` (the name `fedseg node-key --site STARE` gave it)."""
    return public_key_file.name.removesuffix(".pub")


def build_registry(public_keys: list[Path], max_examples: Mapping[str, int] | None = None) -> SiteRegistry:
    sites: dict[str, RegisteredSite] = {}
    for path in public_keys:
        if not path.is_file():
            raise RegistryError(f"{path}: public key not found; each site makes it with `fedseg node-key`")
        name = site_name_of(path)
        if name in sites:
            raise RegistryError(f"{path}: site {name} is named twice")
        site = RegisteredSite(name, path.read_text().strip(), int((max_examples or {}).get(name, 0)))
        site.key()
        sites[name] = site
    unknown = sorted(set(max_examples or {}) - set(sites))
    if unknown:
        raise RegistryError(f"max-examples names sites without a public key: {unknown}")
    return SiteRegistry(sites, "<new>")


def _digest(payload: Mapping) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def write_registry(path: str | Path, registry: SiteRegistry) -> Path:
    payload = registry.to_json()
    return atomic_write_text(path, json.dumps({**payload, DIGEST_KEY: _digest(payload)}, indent=2) + "\n")


def load_registry(path: str | Path) -> SiteRegistry:
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"{path}: site registry not found; the coordinator makes it with `fedseg registry`")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        expected = payload.pop(DIGEST_KEY, None)
        if expected is not None and expected != _digest(payload):
            raise RegistryError(
                f"{path}: damaged site registry (its checksum does not match: changed since `fedseg registry` "
                "wrote it); copy it again from the coordinator"
            )
        if payload.get("format") != FORMAT:
            raise RegistryError(f"{path}: not a fedseg site registry (made by `fedseg registry`)")
        sites = {
            str(name): RegisteredSite(str(name), str(entry["public-key"]), int(entry.get("max-examples", 0)))
            for name, entry in payload["sites"].items()
        }
    except RegistryError as error:
        if str(path) in str(error):
            raise
        raise RegistryError(f"{path}: {error}; copy it again from the coordinator") from None
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise RegistryError(
            f"{path}: damaged site registry ({type(error).__name__}); copy it again from the coordinator"
        ) from None
    registry = SiteRegistry(sites, str(path))
    for site in sites.values():
        try:
            site.key()
        except RegistryError as error:
            raise RegistryError(f"{path}: {error}; copy it again from the coordinator") from None
    return registry


def load_node_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """A site's private key as `fedseg node-key` writes it (OpenSSH, EC P-384)."""
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"{path}: node key not found; make it with `fedseg node-key --out DIR --site NAME`")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except Exception as error:  # cryptography raises many types for damaged keys
        raise RegistryError(
            f"{path}: not a readable node key ({type(error).__name__}: {error}); restore it from a backup, or make "
            "a new one with `fedseg node-key` (and register its .pub again)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise RegistryError(f"{path}: not an EC key; make it with `fedseg node-key`")
    if _public_blob(key) != _embedded_public_blob(path):
        raise RegistryError(
            f"{path}: damaged node key: its private key does not match the public key stored with it; restore it "
            "from a backup, or make a new one with `fedseg node-key` (and register its .pub again)"
        )
    return key


def _public_blob(key: ec.EllipticCurvePrivateKey) -> bytes:
    text = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(text.split()[1])


def _embedded_public_blob(path: Path) -> bytes | None:
    """The public key an OpenSSH private key file stores beside the private one (the cryptography library
    derives the public key from the private one and never compares them, so a changed private key loads)."""
    try:
        lines = path.read_text(encoding="ascii").strip().splitlines()
        data = base64.b64decode("".join(lines[1:-1]))
        position = data.index(b"\0") + 1  # after the "openssh-key-v1" magic
        for _ in range(3):  # cipher name, KDF name, KDF options
            position += 4 + int.from_bytes(data[position : position + 4], "big")
        position += 4  # number of keys
        length = int.from_bytes(data[position : position + 4], "big")
        return data[position + 4 : position + 4 + length]
    except (ValueError, UnicodeDecodeError):
        return None
