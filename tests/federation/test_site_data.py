from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.data.errors import DataError
from fedseg.data.layout import scan_centre
from fedseg.federation.config import FederationConfig
from fedseg.federation.site_data import load_site_data, select_site_records, shard_records
from fedseg.federation.sites import Shard, parse_site
from tests.conftest import POLYP, RETINA, require_shared_data


def test_kvasir_shards_are_disjoint_and_the_test_split_is_shared() -> None:
    require_shared_data()
    config = FederationConfig(site_map="x", test_fraction=0.1, val_fraction=0.1, label_fraction=0.25)
    shards = [select_site_records(parse_site(f"Kvasir-SEG/{k}-of-4"), POLYP, config) for k in range(1, 5)]
    test = select_site_records(parse_site("heldout:Kvasir-SEG/test"), POLYP, config).evaluation
    stems = [{r.stem for r in s.train + s.evaluation} for s in shards]
    assert all(a.isdisjoint(b) for i, a in enumerate(stems) for b in stems[i + 1 :])
    assert len(test) == 100 and all(s.isdisjoint({r.stem for r in test}) for s in stems)
    assert sum(len(s) for s in stems) == 900
    assert all(215 <= len(s) <= 235 for s in stems)
    assert all(0.2 < len(s.labelled) / len(s.train) < 0.3 for s in shards)


def test_chase_db1_shards_keep_both_eyes_of_a_child_together() -> None:
    require_shared_data()
    records = scan_centre(RETINA, "CHASE_DB1")
    for k in (1, 2, 3):
        stems = {r.stem for r in shard_records(records, Shard(k, 3), seed=0)}
        assert all((s[:-1] + "L" in stems) and (s[:-1] + "R" in stems) for s in stems)


def test_by_size_shards_order_sites_by_foreground(retina_crops: Path) -> None:
    records = scan_centre(retina_crops, "AV-WIDE")
    from fedseg.data.reading import read_mask

    small, large = (shard_records(records, Shard(k, 2, by_size=True), seed=0) for k in (1, 2))
    fraction = lambda rs: sum(read_mask(r.mask).mean() for r in rs) / len(rs)  # noqa: E731
    assert fraction(small) <= fraction(large)


def test_heldout_sites_score_every_image_and_training_sites_their_validation(retina_crops: Path) -> None:
    config = FederationConfig(site_map="x", val_fraction=0.25)
    heldout = load_site_data(parse_site("heldout:CHASE_DB1"), retina_crops, config)
    assert heldout.train is None and len(heldout.evaluation) == 4
    site = load_site_data(parse_site("STARE"), retina_crops, config)
    assert site.train is not None and len(site.train) == 3 and len(site.evaluation) == 1


def test_test_split_needs_a_test_fraction(retina_crops: Path) -> None:
    with pytest.raises(DataError, match="'test-fraction' is 0"):
        select_site_records(parse_site("heldout:STARE/test"), retina_crops, FederationConfig(site_map="x"))
