from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedseg.data.layout import list_centres, scan_centre
from fedseg.data.loading import load_record
from fedseg.data.synth import SynthConfig, centre_appearance, generate, synth_image


def test_layout_masks_and_fov(synth_root: Path) -> None:
    assert list_centres(synth_root) == ["centre-01", "centre-02", "centre-03"]
    payload = json.loads((synth_root / "synth.json").read_text())
    assert len(payload["centres"]) == 3
    for centre in list_centres(synth_root):
        records = scan_centre(synth_root, centre)
        assert len(records) == 6 and all(r.labelled for r in records)
        loaded = load_record(records[0])
        assert 0.02 < loaded.mask.mean() < 0.6
        if loaded.fov is not None:
            assert not (loaded.mask & ~loaded.fov).any()
            assert loaded.image[~loaded.fov].max() == 0


def test_masks_are_exact_structures_darker_than_background() -> None:
    appearance = centre_appearance(0, 3, seed=0)
    image, mask, fov = synth_image(128, np.random.default_rng(0), appearance)
    grey = image.astype(float).mean(axis=2)
    background = ~mask & fov
    assert grey[mask].mean() != grey[background].mean()
    assert mask.dtype == bool and image.dtype == np.uint8 and image.shape == (128, 128, 3)


def test_centres_differ_in_appearance(synth_root: Path) -> None:
    colours = []
    for centre in list_centres(synth_root):
        images = [load_record(r).image for r in scan_centre(synth_root, centre)]
        pixels = np.concatenate([im.reshape(-1, 3) for im in images])
        colours.append(pixels[pixels.sum(axis=1) > 0].mean(axis=0))
    distances = [np.abs(colours[i] - colours[j]).max() for i in range(3) for j in range(i + 1, 3)]
    assert min(distances) > 15


def test_generation_is_deterministic_and_writes_unlabelled(tmp_path: Path) -> None:
    config = SynthConfig(out=tmp_path / "a", centres=1, images=4, size=64, seed=9, unlabelled_fraction=0.5)
    generate(config, progress=False)
    generate(
        SynthConfig(out=tmp_path / "b", centres=1, images=4, size=64, seed=9, unlabelled_fraction=0.5), progress=False
    )
    records = scan_centre(tmp_path / "a", "centre-01")
    assert [r.labelled for r in records] == [False, False, True, True]
    for name in ("img-0000.png", "img-0003.png"):
        a = (tmp_path / "a" / "centre-01" / "images" / name).read_bytes()
        assert a == (tmp_path / "b" / "centre-01" / "images" / name).read_bytes()
