"""The ClientApp's handlers called in-process on real images: a signed, masked, encrypted update
that the server's checks accept, and the seeds a survivor reveals (no Flower process started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedseg.crypto.packing import EncryptedVector
from fedseg.crypto.protection import RoundTicket
from fedseg.crypto.registry import load_registry
from fedseg.federation import protocol
from fedseg.federation.config import FederationConfig
from fedseg.models import build_model
from fedseg.models.state import model_state
from server.updates import authenticate, authenticate_seeds
from simulations.bench.he_overhead import credentials
from sites import app
from sites.records import TICKET, model_records, seeds_from, ticket_record, update_from

SITE_MAP = "STARE,AV-WIDE,heldout:CHASE_DB1"


@pytest.fixture()
def run_config(retina_crops: Path, tmp_path: Path) -> dict:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    keys = credentials(tmp_path / "keys", ["STARE", "AV-WIDE", "CHASE_DB1"])
    return {
        "site-map": SITE_MAP,
        "data-root": str(retina_crops),
        "out": str(tmp_path / "run"),
        "local-steps": 1,
        "batch-size": 2,
        "crop-size": 32,
        "val-fraction": 0.25,
        "model-options": '{"widths": [4, 8]}',
        "device": "cpu",
        "he": True,
        "he-keys": str(keys / "he"),
        "registry": str(keys / "federation.json"),
        "node-keys": str(keys / "node-keys"),
    }


def test_a_site_sends_a_signed_masked_update_the_server_accepts_and_reveals_its_seeds(run_config: dict) -> None:
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(), run_config=run_config)
    config = FederationConfig.from_run_config(run_config)
    described = app.describe(Message(RecordDict({}), dst_node_id=7, message_type="query.describe"), context)
    assert dict(described.content[protocol.SITE])["site"] == "STARE"
    ticket = RoundTicket("run-x", 1, ("AV-WIDE", "STARE"), weight_total=10, max_sites=2)
    initial = model_state(build_model(config.model_config))  # the public start model
    request = RecordDict(
        {protocol.CONFIG: ConfigRecord({"server-round": 1}), TICKET: ticket_record(ticket), **model_records(initial)}
    )
    reply = app.train(Message(request, dst_node_id=7, message_type="train"), context)
    update = update_from(reply.content)
    registry = load_registry(run_config["registry"])
    contribution = authenticate(update, site="STARE", ticket=ticket, registry=registry, max_examples=10)
    assert isinstance(contribution.payload, EncryptedVector) and contribution.examples >= 1
    unmask = RecordDict({TICKET: ticket_record(ticket), protocol.CONFIG: ConfigRecord({"dropped": "AV-WIDE"})})
    with pytest.raises(Exception, match="fewer than min-train-sites"):  # default min-train-sites 1: one is fine
        app.unmask(Message(unmask, dst_node_id=7, message_type="query.unmask"), Context(
            run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(),
            run_config={**run_config, "min-train-sites": 2}))  # fmt: skip
    answer = app.unmask(Message(unmask, dst_node_id=7, message_type="query.unmask"), context)
    revealed = authenticate_seeds(
        seeds_from(answer.content), site="STARE", ticket=ticket, dropped=("AV-WIDE",), registry=registry
    )
    assert set(revealed.seeds) == {"AV-WIDE", "self"}
