from __future__ import annotations

from pathlib import Path

import torch

from fedseg.federation.config import FederationConfig
from fedseg.federation.site_runtime import SiteRuntime, load_site_state
from fedseg.federation.sites import parse_site
from fedseg.models import build_model
from fedseg.models.state import model_state


def _runtime(root: Path, state: Path, spec: str = "STARE") -> SiteRuntime:
    config = FederationConfig(
        site_map="STARE,heldout:CHASE_DB1",
        crop_size=32,
        local_steps=2,
        batch_size=2,
        model_options='{"widths": [4, 8]}',
        dp_epsilon=5.0,
        mean_teacher=True,
        label_fraction=0.5,
        val_fraction=0.25,
        tile_size=64,
    )
    return SiteRuntime(parse_site(spec), config, data_root=root, state_dir=state, device="cpu")


def test_a_repeated_round_gets_the_same_reply_and_spends_no_privacy(retina_crops: Path, tmp_path: Path) -> None:
    site = _runtime(retina_crops, tmp_path)
    torch.manual_seed(0)
    global_weights = model_state(build_model(site.config.model_config))
    first = site.train(1, global_weights)
    spent = site.privacy_spent()["epsilon"]
    again = site.train(1, global_weights)  # the server crashed and asks for round 1 again
    assert all(torch.equal(first.weights[k], again.weights[k]) for k in first.weights)
    assert site.privacy_spent()["epsilon"] == spent
    assert load_site_state(tmp_path / "state.bin").step == 2
    second = site.train(2, first.weights)
    assert second.metrics["epsilon"] > first.metrics["epsilon"]
    assert (tmp_path / "state.bin").stat().st_mode & 0o777 == 0o600


def test_describe_and_evaluate(retina_crops: Path, tmp_path: Path) -> None:
    heldout = _runtime(retina_crops, tmp_path, "heldout:CHASE_DB1")
    assert heldout.describe() == {
        "site": "CHASE_DB1",
        "centre": "CHASE_DB1",
        "role": "heldout",
        "labelled": 0,
        "unlabelled": 0,
        "evaluation": 4,
    }
    weights = model_state(build_model(heldout.config.model_config))
    result = heldout.evaluate(weights)
    assert result["counts"]["n_images"] == 4 and result["role"] == "heldout"
    assert result["counts"]["tp"] + result["counts"]["fn"] > 0
