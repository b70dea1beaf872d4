from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedseg.data.layout import ImageRecord, scan_dataset
from fedseg.data.splits import SplitConfig, load_manifest, make_manifest, split_centre
from tests.conftest import RETINA, require_shared_data


def _records(centre: str, stems: list[str], labelled: bool = True) -> list[ImageRecord]:
    return [ImageRecord(centre, s, Path(f"{s}.png"), Path(f"m/{s}.png") if labelled else None) for s in stems]


def test_real_chase_db1_keeps_both_eyes_of_a_child_together() -> None:
    require_shared_data()
    records = scan_dataset(RETINA, ["CHASE_DB1"])
    for seed in range(5):
        split = split_centre(records["CHASE_DB1"], SplitConfig(seed=seed, val_fraction=0.25, test_fraction=0.25))
        for part in (split.train, split.val, split.test):
            children = {stem[:-1] for stem in part}
            assert all(f"{child}L" in part and f"{child}R" in part for child in children)
        assert len(split.val) == 8 and len(split.test) == 8  # 7 wanted each, rounded up to whole children


def test_split_is_deterministic_and_seeded() -> None:
    records = _records("A", [f"im{i:02d}" for i in range(40)])
    config = SplitConfig(seed=1, val_fraction=0.2, test_fraction=0.1)
    assert split_centre(records, config) == split_centre(records, config)
    assert split_centre(records, config).val != split_centre(records, SplitConfig(seed=2, val_fraction=0.2)).val


def test_label_fraction_and_unlabelled_images() -> None:
    records = _records("A", [f"l{i}" for i in range(20)]) + _records("A", ["u0", "u1"], labelled=False)
    split = split_centre(records, SplitConfig(seed=0, val_fraction=0.2, label_fraction=0.25))
    assert len(split.val) == 4 and set(split.val).isdisjoint(split.train)
    assert len(split.labelled) == 4  # a quarter of the 16 labelled training images
    assert {"u0", "u1"} <= set(split.unlabelled)
    assert set(split.labelled) | set(split.unlabelled) == set(split.train)


@settings(max_examples=30, deadline=None)
@given(n_a=st.integers(1, 30), n_b=st.integers(1, 30), seed=st.integers(0, 10**6))
def test_adding_a_centre_never_reshuffles_another(n_a: int, n_b: int, seed: int) -> None:
    a, b = _records("A", [f"a{i}" for i in range(n_a)]), _records("B", [f"b{i}" for i in range(n_b)])
    config = SplitConfig(seed=seed, val_fraction=0.3, label_fraction=0.5)
    alone = make_manifest({"A": a}, config)
    together = make_manifest({"A": a, "B": b}, config)
    assert alone.centres["A"] == together.centres["A"]
    parts = together.centres["B"]
    assert sorted(parts.train + parts.val + parts.test) == sorted(r.stem for r in b)


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    records = {"A": _records("A", [f"a{i}" for i in range(10)]), "B": _records("B", [f"b{i}" for i in range(7)])}
    manifest = make_manifest(records, SplitConfig(seed=4, val_fraction=0.2, group_patterns={"A": r"^a(\d)$"}))
    manifest.save(tmp_path / "manifest.json")
    assert load_manifest(tmp_path / "manifest.json") == manifest


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        SplitConfig(val_fraction=1.5)
    with pytest.raises(ValueError, match="leave images to train on"):
        SplitConfig(val_fraction=0.6, test_fraction=0.4)
    with pytest.raises(ValueError, match="capturing group"):
        split_centre(_records("A", ["x"]), SplitConfig(group_patterns={"A": "x"}))
