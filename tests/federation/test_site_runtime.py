from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fedseg.federation import site_runtime
from fedseg.federation.config import FederationConfig
from fedseg.federation.protocol import weights_digest
from fedseg.federation.site_runtime import EvaluationLimitReached, SiteRuntime, load_site_state
from fedseg.federation.sites import parse_site
from fedseg.models import build_model
from fedseg.models.state import model_state
from fedseg.privacy import epsilon_of


def _runtime(root: Path, state: Path, spec: str = "STARE", **overrides: Any) -> SiteRuntime:
    values: dict[str, Any] = dict(
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
    values.update(overrides)
    limit = values.pop("max_evaluations", 100)
    config = FederationConfig(**values)
    return SiteRuntime(parse_site(spec), config, data_root=root, state_dir=state, device="cpu", max_evaluations=limit)


def _weights(config: FederationConfig, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return model_state(build_model(config.model_config))


def test_a_repeated_round_gets_the_same_reply_and_spends_no_privacy(retina_crops: Path, tmp_path: Path) -> None:
    site = _runtime(retina_crops, tmp_path)
    global_weights = _weights(site.config)
    first = site.train(1, global_weights)
    spent = site.privacy_spent()["epsilon"]
    again = site.train(1, global_weights)  # the server crashed and asks for round 1 again
    assert all(torch.equal(first.weights[k], again.weights[k]) for k in first.weights)
    assert site.privacy_spent()["epsilon"] == spent and again.ledger == first.ledger
    assert load_site_state(tmp_path / "state.bin").step == 2
    assert "supervised_loss" not in first.metrics and "seconds" not in first.metrics  # under DP they stay here
    second = site.train(2, first.weights)
    assert second.metrics["epsilon"] > first.metrics["epsilon"]
    assert (second.ledger.kind, second.ledger.round, second.ledger.steps) == ("update", 2, 2)
    assert (tmp_path / "state.bin").stat().st_mode & 0o777 == 0o600


def test_describe_and_evaluate_at_most_max_evaluations_models(retina_crops: Path, tmp_path: Path) -> None:
    heldout = _runtime(retina_crops, tmp_path, "heldout:CHASE_DB1", max_evaluations=2)
    assert heldout.describe() == {
        "site": "CHASE_DB1",
        "centre": "CHASE_DB1",
        "role": "heldout",
        "labelled": 0,
        "unlabelled": 0,
        "evaluation": 4,
    }
    first, second, third = (_weights(heldout.config, seed) for seed in (0, 1, 2))
    result = heldout.evaluate(first)
    assert result["counts"]["n_images"] == 4 and result["role"] == "heldout" and result["ledger"] is None
    assert result["counts"]["tp"] + result["counts"]["fn"] > 0  # held-out scores: exact, by design
    heldout.evaluate(second)
    assert heldout.evaluate(first) == result  # a model scored before: the same answer, not counted again
    with pytest.raises(EvaluationLimitReached, match="node config 'max-evaluations' = 2"):
        heldout.evaluate(third)


class Killed(BaseException):
    """The site's process dies at a write (SIGKILL): nothing after it runs, no handler sees it."""


def _until_it_answers(start: Callable[[], SiteRuntime], call: Callable[[SiteRuntime], Any]) -> Any:
    """Ask the site until it answers; a killed site is restarted from its disk (as the server retries)."""
    while True:
        try:
            return call(start())
        except Killed:
            continue


# The writes of a round: train writes state.bin, then last-reply.pt; evaluate writes state.bin, then evaluations.json.
# Writes 1-4 are round 1's, 5-8 round 2's (after a round whose state the site kept).
@pytest.mark.parametrize("kill_at", range(1, 9))
def test_a_site_killed_at_any_write_never_releases_more_than_its_ledger_holds(
    kill_at: int, retina_crops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = site_runtime.atomic_write_bytes
    count = {"writes": 0}

    def write(path: Path, data: bytes, **options: Any) -> Path:
        count["writes"] += 1
        if count["writes"] == kill_at:
            raise Killed
        return real_write(path, data, **options)

    monkeypatch.setattr(site_runtime, "atomic_write_bytes", write)

    def start() -> SiteRuntime:
        return _runtime(retina_crops, tmp_path, mean_teacher=False, dp_validation_noise=4.0)

    released: set[tuple[str, Any]] = set()  # what left the site, each thing once
    ledger_epsilon = 0.0
    weights = _weights(start().config)
    for server_round in (1, 2):
        reply = _until_it_answers(start, lambda site, r=server_round, w=weights: site.train(r, w))
        released.add(("update", weights_digest(reply.weights)))
        scored = _until_it_answers(
            start, lambda site, r=server_round, w=reply.weights: site.evaluate(w, server_round=r)
        )
        assert set(scored["counts"]) == {"n_images", "dice_sum"}  # no exact counts under DP
        released.add(("validation", (weights_digest(reply.weights), scored["counts"]["dice_sum"])))
        ledger_epsilon = max(ledger_epsilon, reply.ledger.epsilon, scored["ledger"]["epsilon"])
        weights = reply.weights
    assert count["writes"] > kill_at  # the kill happened, and the site went on after its restart
    accountant = load_site_state(tmp_path / "state.bin").privacy
    updates = sum(kind == "update" for kind, _ in released)
    scores = sum(kind == "validation" for kind, _ in released)
    assert (updates, scores) == (2, 2)
    history = [(accountant.noise_multiplier, accountant.sample_rate, 2 * updates), (4.0, 1.0, scores)]
    spent_by_releases = epsilon_of(history, delta=accountant.delta)
    assert accountant.get_epsilon() >= spent_by_releases * (1 - 1e-9)
    assert ledger_epsilon >= spent_by_releases * (1 - 1e-9)  # the rows the site sent hold it too
