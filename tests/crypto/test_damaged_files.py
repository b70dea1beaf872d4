"""Damaged or wrong crypto files give a clear fedseg error naming the file and the fix, and change nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedseg.cli import main
from fedseg.crypto import transport
from fedseg.crypto.keys import HEKeyError, generate_keys, load_context
from fedseg.crypto.masking import FixedPoint
from fedseg.crypto.packing import CiphertextRejected, Layout, add_encrypted, decrypt_average, encrypt_weighted
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, load_checkpoint, save_checkpoint
from fedseg.models.state import model_state

MODEL = ModelConfig(name="unet", in_channels=1, options={"widths": [4, 8]})
PREPROCESSING = {"channels": 1, "resize": None, "normalisation": "image"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crypto-files")
    generate_keys(root / "keys")
    site = load_context(root / "keys" / "site.context", expect="site")
    torch.manual_seed(0)
    model = build_model(MODEL)
    state = model_state(model)
    fixed = FixedPoint.for_sites(site.parameters, 2)
    good = encrypt_weighted(state, 0.5, site, fixed=fixed, workers=1)
    (root / "last.he").write_bytes(transport.file_bytes(good, model=MODEL.to_json(), preprocessing=PREPROCESSING))
    mask = np.random.default_rng(0).integers(0, 2**fixed.modulus_bits, Layout.of(state).size, dtype=np.uint64)
    noisy = encrypt_weighted(state, 0.5, site, fixed=fixed, mask=mask)  # a share whose masks never cancel
    (root / "masked.he").write_bytes(transport.file_bytes(noisy, model=MODEL.to_json(), preprocessing=PREPROCESSING))
    save_checkpoint(root / "plain.pt", model=model, model_config=MODEL, preprocessing=Preprocessing(channels=1))
    return {"root": root, "site": root / "keys" / "site.context", "server": root / "keys" / "server.context"}


def digests(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def decrypt(capsys, model: Path, keys: Path, out: Path) -> tuple[int, str]:
    code = main(["decrypt", "--model", str(model), "--keys", str(keys), "--out", str(out)])
    return code, capsys.readouterr().err


def damaged_copy(source: Path, target: Path, change) -> Path:
    data = bytearray(source.read_bytes())
    target.write_bytes(bytes(change(data)))
    return target


def flip(position: int):
    def change(data: bytearray) -> bytearray:
        data[position] ^= 0x01
        return data

    return change


def test_a_good_encrypted_model_decrypts_to_the_model(files: dict, tmp_path: Path, capsys) -> None:
    code, _ = decrypt(capsys, files["root"] / "last.he", files["site"], tmp_path / "last.pt")
    torch.manual_seed(0)
    expected = model_state(build_model(MODEL))
    restored = model_state(load_checkpoint(tmp_path / "last.pt").build())
    assert code == 0 and max(float((restored[k] - expected[k]).abs().max()) for k in expected) < 1e-6


@pytest.mark.parametrize("where", ["header", "middle", "last"])
def test_a_flipped_byte_anywhere_in_a_key_file_is_refused_with_its_name(
    files: dict, tmp_path: Path, capsys, where: str
) -> None:
    size = files["site"].stat().st_size
    position = {"header": 20, "middle": size // 2, "last": size - 1}[where]
    keys = damaged_copy(files["site"], tmp_path / "site.context", flip(position))
    (tmp_path / "out.pt").write_bytes(b"an earlier output")
    before = digests(files["root"]) | digests(tmp_path)
    code, message = decrypt(capsys, files["root"] / "last.he", keys, tmp_path / "out.pt")
    assert code == 2 and str(keys) in message and "damaged key file" in message and "fedseg keys" in message
    assert digests(files["root"]) | digests(tmp_path) == before


def test_truncated_or_flipped_he_files_and_a_checkpoint_as_model_are_refused(
    files: dict, tmp_path: Path, capsys
) -> None:
    he = files["root"] / "last.he"
    truncated = damaged_copy(he, tmp_path / "truncated.he", lambda d: d[: len(d) // 2])
    last_byte = damaged_copy(he, tmp_path / "last-byte.he", flip(he.stat().st_size - 1))
    header_byte = damaged_copy(he, tmp_path / "header-byte.he", flip(3))
    cases = {
        truncated: "damaged encrypted model (checksum mismatch",
        last_byte: "damaged encrypted model (checksum mismatch",
        header_byte: "not an encrypted fedseg model",
        files["root"] / "plain.pt": "a plaintext checkpoint: use it as it is",
        files["root"] / "masked.he": "masks did not cancel",
    }
    before = digests(files["root"]) | digests(tmp_path)
    for model, expected in cases.items():
        code, message = decrypt(capsys, model, files["site"], tmp_path / "out.pt")
        assert code == 2 and str(model) in message and expected in message, message
        assert not (tmp_path / "out.pt").exists()
    assert digests(files["root"]) | digests(tmp_path) == before
    code, message = decrypt(capsys, he, files["site"], he)
    assert code == 2 and "is one of the inputs" in message


DAMAGE = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
)


def damage(data: bytes, how: tuple) -> bytes:
    kind, where, value = how
    position = int(where * len(data))
    if kind == "flip":
        return data[:position] + bytes([data[position] ^ value]) + data[position + 1 :]
    if kind == "truncate":
        return data[:position]
    return data[:position] + bytes([value]) + data[position:]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=DAMAGE, target=st.sampled_from(["site", "server", "he", "update"]))
def test_random_damage_to_crypto_files_gives_a_fedseg_error_or_the_right_result(
    files: dict, tmp_path_factory, how: tuple, target: str
) -> None:
    folder = tmp_path_factory.mktemp("damaged")
    site = load_context(files["site"], expect="site")
    if target in ("site", "server"):
        path = folder / f"{target}.context"
        path.write_bytes(damage(files[target].read_bytes(), how))
        with pytest.raises(HEKeyError, match=str(path)):
            load_context(path, expect=target)
        return
    if target == "he":
        path = folder / "last.he"
        path.write_bytes(damage((files["root"] / "last.he").read_bytes(), how))
        with pytest.raises(CiphertextRejected, match=str(path)):
            transport.read_file(path)
        return
    vector, _ = transport.read_file(files["root"] / "last.he")  # an update as it travels in a message
    server = load_context(files["server"], expect="server")
    layout_hash, length = vector.layout_hash, vector.length
    try:
        received, _ = transport.from_bytes(damage(transport.to_bytes(vector), how))
        total, rejected = add_encrypted([received], server, layout_hash=layout_hash, length=length, fixed=vector.fixed)
    except CiphertextRejected:
        return
    if rejected:
        assert total is None
        return
    layout = Layout.of(model_state(build_model(MODEL)))  # accepted only if it still decrypts to the same model
    expected, restored = decrypt_average(vector, site, layout), decrypt_average(total, site, layout)
    assert max(float((restored[k] - expected[k]).abs().max()) for k in expected) < 1e-6
