"""The server's round, driven with fake sites in this process: no SuperLink, no Flower process."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from flwr.app import Message, RecordDict

from fedseg.crypto.packing import EncryptedVector, digest_of
from fedseg.crypto.protection import ProtectedUpdate
from fedseg.crypto.registry import load_node_key
from fedseg.crypto.signing import sign
from fedseg.federation.aggregation import weighted_average
from fedseg.files import read_jsonl
from sites.records import ticket_from, update_from, update_records
from tests.server.conftest import EXAMPLES, FakeSite, failing, make_federation, no_reply, site_change


def expected_average(initial: dict, sites: tuple[str, ...]) -> dict:
    return weighted_average([(site_change(s, initial), float(EXAMPLES[s])) for s in sites])


def assert_close(model: dict, expected: dict, tolerance: float) -> None:
    assert max(float((model[k].double() - expected[k].double()).abs().max()) for k in expected) < tolerance


def decrypted(strategy, grid, model) -> dict:
    site = next(s for s in grid.sites.values() if s.role == "train")
    return site.plaintext(
        Message(RecordDict(strategy._content(1, model, ticket=False)), dst_node_id=1, message_type="evaluate")
    )


def test_plaintext_round_averages_and_refuses_nan_and_absurd_updates_alone(credentials: Path, tmp_path: Path) -> None:
    def sending(change):
        def answer(site: FakeSite, message: Message) -> Message:
            weights = {k: change(v) if v.dtype.is_floating_point else v for k, v in site.plaintext(message).items()}
            update = site.protection.protect(weights, EXAMPLES[site.name], ticket_from(message.content))
            return Message(
                RecordDict({**dict(site.train_reply(message).items()), **update_records(update)}), reply_to=message
            )

        return answer

    nan_update = sending(lambda v: torch.where(torch.rand_like(v) < 0.5, v, torch.full_like(v, float("nan"))))
    huge_update = sending(lambda v: v * 1e3)

    strategy, grid = make_federation(
        credentials,
        tmp_path / "run",
        trainers=("A", "B", "C", "D"),
        he=False,
        behaviour={"C": {"train": nan_update}, "D": {"train": huge_update}},
        evaluate_every=1,
    )
    initial = strategy.initial_weights()
    outcome = strategy.run_round(1, initial)
    assert set(outcome.training.train) == {"A", "B"}
    assert "non-finite" in outcome.left_out["C"] and "absurd" in outcome.left_out["D"]
    assert_close(outcome.training.model, expected_average(initial, ("A", "B")), 1e-6)
    assert outcome.record()["heldout"]["heldout"]["n_images"] == 2


def forged(site: FakeSite, message: Message) -> Message:
    """Signed with a key that is not the site's registered one."""
    content = site.train_reply(message)
    update = update_from(content)
    stranger = load_node_key(site.root / "node-keys" / "stranger.key")
    bad = ProtectedUpdate(update.payload, update.claim, sign(stranger, update.claim))
    return Message(RecordDict({**dict(content.items()), **update_records(bad)}), reply_to=message)


def tampered(site: FakeSite, message: Message) -> Message:
    """A ciphertext byte changed in transit, and the (unkeyed) digest recomputed to match."""
    content = site.train_reply(message)
    update = update_from(content)
    vector = update.payload
    chunk = bytearray(vector.chunks[0])
    chunk[len(chunk) // 2] ^= 0x01
    chunks = (bytes(chunk),) + vector.chunks[1:]
    digest = digest_of(chunks, vector.length, vector.weight, vector.layout_hash, vector.fingerprint, vector.fixed)
    changed = ProtectedUpdate(replace(vector, chunks=chunks, digest=digest), update.claim, update.signature)
    return Message(RecordDict({**dict(content.items()), **update_records(changed)}), reply_to=message)


def inflated(site: FakeSite, message: Message) -> Message:
    """Claims (and encrypts with) twice the examples it registered."""
    return Message(site.train_reply(message, examples=2 * EXAMPLES[site.name]), reply_to=message)


def test_forged_tampered_and_inflated_updates_are_refused_alone_and_the_masked_sum_decrypts(
    credentials: Path, tmp_path: Path
) -> None:
    strategy, grid = make_federation(
        credentials,
        tmp_path / "run",
        trainers=("A", "B", "C", "D", "E"),
        he=True,
        behaviour={"C": {"train": forged}, "D": {"train": tampered}, "E": {"train": inflated}},
    )
    initial = strategy.initial_weights()
    outcome = strategy.run_round(1, initial)
    reasons = outcome.left_out
    assert set(outcome.training.train) == {"A", "B"}
    assert "signature does not match" in reasons["C"]
    assert "does not match the digest the site signed" in reasons["D"]
    assert "claims 100 examples" in reasons["E"] and "at most 50" in reasons["E"]
    assert outcome.training.stats.mode == "masked" and set(outcome.training.stats.unmasked_dropouts) == {"C", "D", "E"}
    assert isinstance(outcome.training.model, EncryptedVector)
    assert_close(decrypted(strategy, grid, outcome.training.model), expected_average(initial, ("A", "B")), 2e-6)
    line = outcome.record()
    assert line["left_out"]["C"].startswith("rejected: ") and line["he"]["mode"] == "masked"


def test_an_update_replayed_from_an_earlier_round_is_refused(credentials: Path, tmp_path: Path) -> None:
    kept: dict[str, RecordDict] = {}

    def replaying(site: FakeSite, message: Message) -> Message:
        if "first" not in kept:
            kept["first"] = site.train_reply(message)
        return Message(kept["first"], reply_to=message)

    strategy, grid = make_federation(
        credentials, tmp_path / "run", trainers=("A", "B", "C"), he=True, behaviour={"C": {"train": replaying}}
    )
    first = strategy.run_round(1, strategy.initial_weights())
    assert set(first.training.train) == {"A", "B", "C"}
    second = strategy.run_round(2, first.training.model)
    assert set(second.training.train) == {"A", "B"}
    assert "replayed: made for round 1" in second.left_out["C"]


def test_an_unsigned_update_is_refused_when_the_federation_has_a_registry(credentials: Path, tmp_path: Path) -> None:
    def unsigned(site: FakeSite, message: Message) -> Message:
        content = site.train_reply(message)
        update = update_from(content)
        bare = ProtectedUpdate(update.payload, update.claim, None)
        return Message(RecordDict({**dict(content.items()), **update_records(bare)}), reply_to=message)

    strategy, _ = make_federation(
        credentials, tmp_path / "run", trainers=("A", "B", "C"), he=False, behaviour={"C": {"train": unsigned}}
    )
    outcome = strategy.run_round(1, strategy.initial_weights())
    assert "unsigned" in outcome.left_out["C"] and set(outcome.training.train) == {"A", "B"}


def test_a_site_that_drops_out_before_sending_is_unmasked_by_the_survivors(credentials: Path, tmp_path: Path) -> None:
    strategy, grid = make_federation(
        credentials, tmp_path / "run", trainers=("A", "B", "C"), he=True, behaviour={"C": {"train": no_reply}}
    )
    initial = strategy.initial_weights()
    outcome = strategy.run_round(1, initial)
    assert "no reply" in outcome.left_out["C"] and outcome.training.stats.unmasked_dropouts == ("C",)
    assert grid.sent.count("query.unmask") == 2
    assert_close(decrypted(strategy, grid, outcome.training.model), expected_average(initial, ("A", "B")), 2e-6)


def test_a_site_that_drops_out_after_sending_its_update_is_removed_and_unmasked(
    credentials: Path, tmp_path: Path
) -> None:
    """D never answers; C sends its update but is gone when the survivors are asked for seeds."""
    strategy, grid = make_federation(
        credentials,
        tmp_path / "run",
        trainers=("A", "B", "C", "D"),
        he=True,
        behaviour={"C": {"query.unmask": failing}, "D": {"train": no_reply}},
    )
    initial = strategy.initial_weights()
    outcome = strategy.run_round(1, initial)
    assert "did not reveal its seeds" in outcome.left_out["C"] and "no reply" in outcome.left_out["D"]
    assert set(outcome.training.train) == {"A", "B"}
    assert set(outcome.training.stats.unmasked_dropouts) == {"C", "D"}
    assert_close(decrypted(strategy, grid, outcome.training.model), expected_average(initial, ("A", "B")), 2e-6)


def test_too_few_updates_stop_the_run_with_the_reasons(credentials: Path, tmp_path: Path) -> None:
    strategy, grid = make_federation(
        credentials,
        tmp_path / "run",
        trainers=("A", "B", "C"),
        he=True,
        behaviour={"B": {"train": no_reply}, "C": {"train": forged}},
        min_train_sites=2,
    )
    strategy.run()
    assert "query.unmask" not in grid.sent  # a sum of one update is never unmasked
    assert not (tmp_path / "run" / "rounds.jsonl").exists() or read_jsonl(tmp_path / "run" / "rounds.jsonl") == []
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "fewer than min-train-sites = 2" in summary and "signature does not match" in summary


def test_a_full_run_writes_typed_rounds_and_encrypted_checkpoints(credentials: Path, tmp_path: Path) -> None:
    strategy, _ = make_federation(
        credentials, tmp_path / "run", trainers=("A", "B", "C"), he=True, num_server_rounds=2, evaluate_every=1
    )
    strategy.run()
    rounds = read_jsonl(tmp_path / "run" / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2]
    for line in rounds:
        assert set(line["train"]) == {"A", "B", "C"} and line["left_out"] == {}
        assert line["train"]["A"]["examples"] == EXAMPLES["A"] and line["he"]["bytes_down"] > 0
        assert math.isclose(line["validation_dice"], 0.75) and "_he" not in line and "_ledger" not in line
    assert (tmp_path / "run" / "checkpoints" / "last.he").exists()
    assert torch.load(tmp_path / "run" / "checkpoints" / "server.pt", weights_only=True)["round"] == 2


def test_a_round_in_progress_when_the_run_is_asked_to_stop_is_not_recorded(credentials: Path, tmp_path: Path) -> None:
    """The results suite writes STOP, then stops the simulation: sites fail only because they are stopped."""
    run = tmp_path / "run"
    calls = {"A": 0}

    def stopped_in_round_2(site: FakeSite, message: Message) -> Message:
        calls["A"] += 1
        if calls["A"] < 2:
            return site.train(message)
        (run / "STOP").touch()  # what simulations.bench.parts.simulate_until writes before it stops the run
        return failing(site, message)

    strategy, _ = make_federation(
        credentials, run, trainers=("A", "B"), he=False, num_server_rounds=3, behaviour={"A": {"train": stopped_in_round_2}}
    )
    strategy.run()
    assert [r["round"] for r in read_jsonl(run / "rounds.jsonl")] == [1]  # not round 2 with A "left out"
    assert torch.load(run / "checkpoints" / "server.pt", weights_only=True)["round"] == 1
    assert "asked to stop" in (run / "summary.md").read_text() and "round 2, which was not recorded" in (
        run / "summary.md"
    ).read_text()


def test_a_stop_request_left_by_an_earlier_run_is_removed_when_a_run_starts(credentials: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "STOP").touch()
    strategy, _ = make_federation(credentials, run, trainers=("A", "B"), he=False, num_server_rounds=2)
    strategy.run()
    assert [r["round"] for r in read_jsonl(run / "rounds.jsonl")] == [1, 2] and not (run / "STOP").exists()
