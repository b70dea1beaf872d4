from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import tomllib

from fedseg.configuration import ConfigError
from fedseg.federation.config import FederationConfig
from fedseg.federation.identity import site_identity
from fedseg.federation.sites import Shard, SiteSpec, parse_site, parse_site_map
from tests.conftest import REPO

APP_CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
EXPERIMENTS = sorted((REPO / "simulations").glob("*.toml"))


def test_site_specs_parse_and_print_back() -> None:
    assert parse_site("STARE") == SiteSpec("STARE")
    assert parse_site("heldout:CHASE_DB1") == SiteSpec("CHASE_DB1", role="heldout")
    shard = parse_site("Kvasir-SEG/2-of-4-by-size")
    assert shard.shard == Shard(2, 4, by_size=True) and shard.name == "Kvasir-SEG-2-of-4-by-size"
    test = parse_site("heldout:Kvasir-SEG/test")
    assert test.test_split and test.name == "Kvasir-SEG-test" and test.to_spec() == "heldout:Kvasir-SEG/test"
    for bad in ("STARE/5-of-4", "STARE/half", "heldout:"):
        with pytest.raises(ValueError, match="Write \\[heldout:\\]CENTRE"):
            parse_site(bad)
    with pytest.raises(ValueError, match="more than once"):
        parse_site_map("STARE,STARE")


def test_pyproject_run_config_defaults_are_the_dataclass_defaults() -> None:
    keys = {f.name.replace("_", "-") for f in fields(FederationConfig)}
    assert set(APP_CONFIG) == keys
    parsed = FederationConfig.from_run_config(APP_CONFIG)
    assert parsed == FederationConfig()


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_named_experiment_is_a_valid_override_of_the_app_config(path: Path) -> None:
    overrides = tomllib.loads(path.read_text())
    assert set(overrides) <= set(APP_CONFIG), f"{path.name} sets keys pyproject.toml does not declare"
    config = FederationConfig.from_run_config({**APP_CONFIG, **overrides})
    assert config.experiment == path.stem
    assert config.training_sites and config.heldout_sites


def test_bad_run_config_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match="'dp-epsilon' must be a number, got 'lots'"):
        FederationConfig.from_run_config({"dp-epsilon": "lots"})
    with pytest.raises(ConfigError, match="unknown run config key 'epochs'"):
        FederationConfig.from_run_config({"epochs": 3})
    with pytest.raises(ConfigError, match="'strategy' must be one of"):
        FederationConfig.from_run_config({"strategy": "fedsgd"})
    with pytest.raises(ConfigError, match="'model-options' is not JSON"):
        FederationConfig.from_run_config({"model-options": "{widths: 3}"})
    with pytest.raises(ConfigError, match="'privacy-unit' must be one of"):
        FederationConfig.from_run_config({"privacy-unit": "patient"})
    with pytest.raises(ConfigError, match="'dp-validation-noise' must be >= 0"):
        FederationConfig.from_run_config({"dp-validation-noise": -1.0})


def test_the_privacy_plan_counts_the_validation_releases() -> None:
    config = FederationConfig(dp_epsilon=4.0, num_server_rounds=7, evaluate_every=3, privacy_unit="subject")
    assert config.privacy is not None and config.privacy.unit == "subject"
    assert config.privacy.releases == 0  # dp-validation-noise = 0: the scores stay at the sites
    noised = FederationConfig(dp_epsilon=4.0, num_server_rounds=7, evaluate_every=3, dp_validation_noise=5.0)
    assert noised.privacy is not None and noised.privacy.releases == 3  # after rounds 3, 6 and 7


def test_node_identity_from_partition_or_site() -> None:
    config = FederationConfig(site_map="STARE,AV-WIDE,heldout:CHASE_DB1", data_root="/data", out="/runs/x")
    assert site_identity({"partition-id": 2, "num-partitions": 3}, config).spec.name == "CHASE_DB1"
    deployed = site_identity({"site": "heldout:CHASE_DB1", "data-root": "/mnt/images"}, config)
    assert deployed.data_root == Path("/mnt/images") and not deployed.spec.trains
    with pytest.raises(ConfigError, match="num-supernodes=3"):
        site_identity({"partition-id": 3, "num-partitions": 4}, config)
    with pytest.raises(ConfigError, match="names no site"):
        site_identity({}, config)
    assert site_identity({"site": "STARE", "max-evaluations": 5}, config).max_evaluations == 5
    with pytest.raises(ConfigError, match="'max-evaluations' must be an integer >= 1"):
        site_identity({"site": "STARE", "max-evaluations": 0}, config)
