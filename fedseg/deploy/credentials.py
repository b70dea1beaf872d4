"""TLS certificates and SuperNode authentication keys, made with the ``cryptography`` package.

``make_certificates``: a private CA (``ca.crt``, ``ca.key``) and the SuperLink's certificate
(``server.pem``, ``server.key``) valid for the given host names and IP addresses; SuperNodes and
the ``flwr`` CLI verify the SuperLink against ``ca.crt``.

``make_node_key``: an EC (NIST P-384) key pair in OpenSSH format, as Flower's SuperNode
authentication expects: the site keeps ``<site>.key`` (mode 0600) and the aggregator registers
``<site>.pub`` with ``flwr supernode register``. An unregistered key is refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedseg.files import atomic_write_bytes

VALID_DAYS = 825


@dataclass(frozen=True)
class CertificatePaths:
    ca_certificate: Path
    ca_key: Path
    server_certificate: Path
    server_key: Path


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedseg federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _alternative_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_certificates(out: str | Path, hosts: Sequence[str]) -> CertificatePaths:
    """A CA and a SuperLink certificate for ``hosts`` (names or IPs the sites use to reach the SuperLink)."""
    if not hosts:
        raise ValueError("name at least one host of the SuperLink, e.g. --host superlink.hospital.org")
    out = Path(out)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("fedseg federation CA"))
        .issuer_name(_name("fedseg federation CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(_alternative_names(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = CertificatePaths(out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key")
    atomic_write_bytes(paths.ca_certificate, ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write_bytes(paths.ca_key, _private_pem(ca_key), mode=0o600)
    atomic_write_bytes(paths.server_certificate, server.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write_bytes(paths.server_key, _private_pem(server_key), mode=0o600)
    return paths


def make_node_key(out: str | Path, site: str) -> tuple[Path, Path]:
    """``<site>.key`` (private, OpenSSH, 0600) and ``<site>.pub`` (to register at the SuperLink)."""
    out = Path(out)
    private = out / f"{site}.key"
    if private.exists():
        raise FileExistsError(f"{private}: exists already; a site keeps its key (remove it to make a new one)")
    key = ec.generate_private_key(ec.SECP384R1())
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public_bytes = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    atomic_write_bytes(private, private_bytes, mode=0o600)
    public = atomic_write_bytes(out / f"{site}.pub", public_bytes + f" fedseg-{site}\n".encode(), mode=0o644)
    return private, public
