from __future__ import annotations

from pathlib import Path

import pytest
import tenseal as ts

from fedseg.crypto.keys import HEKeyError, HEParameters, generate_keys, key_file_mode, load_context


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    generate_keys(folder)
    return folder


def test_site_context_is_secret_and_server_context_cannot_decrypt(keys: Path) -> None:
    assert key_file_mode(keys / "site.context") == 0o600
    site = load_context(keys / "site.context", expect="site")
    server = load_context(keys / "server.context", expect="server")
    assert site.can_decrypt and not server.can_decrypt
    assert site.fingerprint == server.fingerprint == (keys / "fingerprint.txt").read_text().strip()
    ciphertext = ts.ckks_vector(site.context, [1.0, 2.0]).serialize()
    at_server = ts.ckks_vector_from(server.context, ciphertext)
    with pytest.raises(ValueError, match="secret_key"):
        at_server.decrypt()
    with pytest.raises(ValueError):  # the server cannot even encrypt: it holds no public key
        ts.ckks_vector(server.context, [1.0])


def test_kinds_are_checked_and_existing_keys_are_never_overwritten(keys: Path, tmp_path: Path) -> None:
    with pytest.raises(HEKeyError, match="is a site context, but a server context is needed"):
        load_context(keys / "site.context", expect="server")
    with pytest.raises(HEKeyError, match="not a fedseg key file"):
        (tmp_path / "x.context").write_bytes(b"junk")
        load_context(tmp_path / "x.context", expect="site")
    with pytest.raises(FileExistsError, match="holds keys already"):
        generate_keys(keys)


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="poly modulus degree"):
        HEParameters(poly_modulus_degree=1000)
    with pytest.raises(ValueError, match="scale bits"):
        HEParameters(coeff_mod_bit_sizes=(30, 30), scale_bits=30)
