"""The encrypted sum of real model updates decrypts to the plaintext weighted average; bad ciphertexts are refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import tenseal as ts
import torch

from fedseg.crypto import transport
from fedseg.crypto.keys import generate_keys, load_context
from fedseg.crypto.masking import FixedPoint
from fedseg.crypto.packing import Layout, add_encrypted, decrypt_average, digest_of, encrypt_weighted
from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig, TrainingCrops
from fedseg.data.layout import scan_centre
from fedseg.data.loading import load_record
from fedseg.federation.aggregation import weighted_average
from fedseg.models import ModelConfig, build_model
from fedseg.models.state import model_state
from fedseg.training.local import LocalConfig, LocalTrainer

MODEL = ModelConfig(name="unet", options={"widths": [8, 16, 32]})
FIXED = FixedPoint(22, 17)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    folder, other = tmp_path_factory.mktemp("keys"), tmp_path_factory.mktemp("other-keys")
    generate_keys(folder)
    generate_keys(other)
    return (
        load_context(folder / "site.context", expect="site"),
        load_context(folder / "server.context", expect="server"),
        load_context(other / "site.context", expect="site"),
    )


@pytest.fixture(scope="module")
def updates(retina_crops: Path) -> list:
    """Real local updates: two steps of training at each retinal centre, weighted by its image count."""
    result = []
    for index, centre in enumerate(("STARE", "AV-WIDE", "CHASE_DB1")):
        images = [load_record(r) for r in scan_centre(retina_crops, centre)[: index + 2]]
        crops = TrainingCrops(images, crop=CropConfig(size=32), augment=AugmentConfig.preset("basic"))
        torch.manual_seed(0)
        trainer = LocalTrainer(
            model_config=MODEL,
            config=LocalConfig(batch_size=2),
            dataset=crops,
            device=torch.device("cpu"),
            seed=index,
            planned_steps=2,
        )
        trainer.run(2)
        result.append((trainer.weights(), float(len(images))))
    return result


def test_decrypted_encrypted_sum_equals_plaintext_weighted_average(contexts: tuple, updates: list) -> None:
    site, server, _ = contexts
    layout = Layout.of(updates[0][0])
    encrypted = [encrypt_weighted(weights, weight / 9, site, fixed=FIXED, workers=1) for weights, weight in updates]
    travelled = [transport.from_bytes(transport.to_bytes(e))[0] for e in encrypted]  # bytes on the wire
    total, rejected = add_encrypted(travelled, server, layout_hash=layout.hash, length=layout.size, fixed=FIXED)
    assert rejected == {} and total is not None and abs(total.weight - 1.0) < 1e-12
    decrypted = decrypt_average(total, site, layout)
    expected = weighted_average(updates)
    assert max(float((decrypted[k] - expected[k]).abs().max()) for k in expected) < 1e-6
    with pytest.raises(PermissionError, match="only sites can decrypt"):
        decrypt_average(total, server, layout)


def test_damaged_tampered_or_foreign_updates_are_refused_and_the_rest_summed(contexts: tuple, updates: list) -> None:
    site, server, stranger = contexts
    layout = Layout.of(updates[0][0])
    good = [encrypt_weighted(w, n / 9, site, fixed=FIXED, workers=1) for w, n in updates[:2]]
    truncated = replace(good[0], chunks=good[0].chunks[:-1])
    flipped = bytearray(good[1].chunks[0])
    flipped[len(flipped) // 2] ^= 0xFF
    tampered = replace(good[1], chunks=(bytes(flipped),) + good[1].chunks[1:])
    foreign = encrypt_weighted(updates[2][0], updates[2][1] / 9, stranger, fixed=FIXED, workers=1)
    rescaled = replace(good[0], chunks=(transport_rescaled(good[0], site),) + good[0].chunks[1:])
    rescaled = replace(rescaled, digest=digest_of(rescaled.chunks, *_fields(rescaled)))
    total, rejected = add_encrypted(
        [truncated, good[0], tampered, foreign, rescaled, good[1]],
        server,
        layout_hash=layout.hash,
        length=layout.size,
        fixed=FIXED,
    )
    assert "truncated" in rejected[0] and "digest" in rejected[2] and "other keys" in rejected[3]
    assert "cannot be added" in rejected[4]  # loads, but at another scale: refused alone, the sum intact
    assert set(rejected) == {0, 2, 3, 4} and total is not None
    assert abs(total.weight - (updates[0][1] + updates[1][1]) / 9) < 1e-12
    decrypted = decrypt_average(total, site, layout)
    expected = weighted_average(updates[:2])
    assert max(float((decrypted[k] - expected[k]).abs().max()) for k in expected) < 1e-6


def test_the_default_model_encrypts_to_at_most_eight_times_its_fp32_size(contexts: tuple) -> None:
    site, _, _ = contexts
    weights = model_state(build_model(ModelConfig()))
    update = encrypt_weighted(weights, 0.5, site, fixed=FIXED, workers=1)
    assert update.nbytes < 8 * 4 * Layout.of(weights).size


def transport_rescaled(update, site) -> bytes:
    """The first chunk re-encrypted at another scale: it deserialises, but cannot be added to the others."""
    values = ts.ckks_vector_from(site.context, update.chunks[0]).decrypt()
    return ts.ckks_vector(site.context, values, scale=2.0**30).serialize()


def _fields(update) -> tuple:
    return update.length, update.weight, update.layout_hash, update.fingerprint, update.fixed
