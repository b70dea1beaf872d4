from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import tomllib

from fedseg.configuration import ConfigError
from fedseg.federation.config import FederationConfig, run_config_keys
from fedseg.federation.identity import site_identity
from fedseg.federation.sites import Shard, SiteSpec, parse_site, parse_site_map
from fedseg.losses import LossConfig
from fedseg.training.config import OptimConfig
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.training.settings import SECTIONS
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
    assert set(APP_CONFIG) == set(run_config_keys()), "declare every run-config key in [tool.flwr.app.config]"
    parsed = FederationConfig.from_run_config(APP_CONFIG)
    assert parsed == FederationConfig()
    assert parsed.to_run_config() == APP_CONFIG


def test_every_mean_teacher_loss_and_optimiser_field_is_a_run_config_key() -> None:
    keys = run_config_keys()
    for section in SECTIONS:
        assert {f.name for f in fields(section.cls)} == {k.name for k in keys.values() if k.section is section}
    config = FederationConfig.from_run_config(
        {"mean-teacher": True, "noise-std": 0.05, "flips": False, "student-jitter": 0.0, "unlabelled-ratio": 0.5}
    )
    assert config.local_config.mean_teacher == MeanTeacherConfig(
        noise_std=0.05, flips=False, student_jitter=0.0, unlabelled_ratio=0.5
    )
    loss = FederationConfig.from_run_config({"focal-weight": 0.0, "focal-alpha": 0.25, "lr-schedule": "cosine"})
    assert loss.local_config.loss == LossConfig(focal_weight=0.0, alpha=0.25)
    assert loss.local_config.optim == OptimConfig(lr=1e-3, schedule="cosine")
    assert FederationConfig().local_config.loss.alpha is None  # focal-alpha = 0: unweighted


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


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("noise-std", "loud", "'noise-std' must be a number, got 'loud'"),
        ("flips", 2, "'flips' must be true or false, got 2"),
        ("ema-decay", 1.5, r"'ema-decay' must be in \(0, 1\), got 1.5"),
        ("lr-schedule", "step", r"'lr-schedule' must be one of \('onecycle', 'cosine', 'constant'\), got 'step'"),
        ("focal-weight", -1.0, "'focal-weight' = -1.0: loss weights must be >= 0"),
        ("local-steps", 2.5, "'local-steps' must be an integer, got 2.5"),
        ("he", "maybe", "'he' must be true or false, got 'maybe'"),
        ("tracking", 3, "'tracking' must be a string, got 3"),
    ],
)
def test_a_bad_value_names_its_key_and_value(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^run config {message}"):
        FederationConfig.from_run_config({key: value})


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
