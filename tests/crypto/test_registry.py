"""`fedseg registry`: the site registry from the sites' public node keys; signatures verify against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedseg.cli import main
from fedseg.crypto.registry import RegistryError, load_node_key, load_registry
from fedseg.crypto.signing import UpdateClaim, UpdateRejected, sign, verify
from fedseg.deploy.credentials import make_node_key


def test_the_registry_maps_names_to_keys_and_bounds_and_signatures_verify(tmp_path: Path, capsys) -> None:
    for name in ("STARE", "AV-WIDE", "rogue"):
        make_node_key(tmp_path / "keys", name)
    out = tmp_path / "federation.json"
    code = main(
        ["registry", str(tmp_path / "keys" / "STARE.pub"), str(tmp_path / "keys" / "AV-WIDE.pub"),
         "--max-examples", "STARE=20", "--out", str(out)]
    )  # fmt: skip
    assert code == 0 and "give it to the aggregator" in capsys.readouterr().out
    registry = load_registry(out)
    assert set(registry.sites) == {"STARE", "AV-WIDE"} and registry.sites["STARE"].max_examples == 20
    claim = UpdateClaim("run", 1, "STARE", 10, "digest", ("AV-WIDE", "STARE"))
    verify(registry, claim, sign(load_node_key(tmp_path / "keys" / "STARE.key"), claim))
    with pytest.raises(UpdateRejected, match="signature does not match"):
        verify(registry, claim, sign(load_node_key(tmp_path / "keys" / "rogue.key"), claim))
    with pytest.raises(UpdateRejected, match="signature does not match"):  # same signature, another round
        verify(registry, UpdateClaim("run", 2, "STARE", 10, "digest", ("AV-WIDE", "STARE")), sign(
            load_node_key(tmp_path / "keys" / "STARE.key"), claim))  # fmt: skip
    before = out.read_bytes()
    assert main(["registry", str(tmp_path / "keys" / "rogue.pub"), "--out", str(out)]) == 2
    assert "exists already" in capsys.readouterr().err and out.read_bytes() == before


def test_damaged_registry_and_node_key_files_name_the_file(tmp_path: Path) -> None:
    make_node_key(tmp_path, "STARE")
    (tmp_path / "federation.json").write_text(json.dumps({"format": "fedseg-site-registry", "sites": {"A": {}}}))
    with pytest.raises(RegistryError, match=f"{tmp_path / 'federation.json'}: damaged site registry"):
        load_registry(tmp_path / "federation.json")
    (tmp_path / "bad.key").write_bytes((tmp_path / "STARE.key").read_bytes()[:100])
    with pytest.raises(RegistryError, match=f"{tmp_path / 'bad.key'}: not a readable node key"):
        load_node_key(tmp_path / "bad.key")
    with pytest.raises(RegistryError, match="not found; the coordinator makes it"):
        load_registry(tmp_path / "missing.json")
