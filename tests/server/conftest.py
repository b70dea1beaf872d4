"""A federation without processes: a fake Grid whose nodes are fedseg sites in this process.

Each fake site answers ``query.describe``, ``train`` (the global weights plus a small,
site-specific change, protected by the real ``SiteProtection``), ``query.unmask`` and
``evaluate``. ``behaviour`` lets a test make one site misbehave (drop out, forge, tamper).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedseg.crypto.keys import generate_keys, load_context
from fedseg.crypto.packing import Layout, decrypt_average
from fedseg.crypto.protection import SiteProtection
from fedseg.crypto.registry import build_registry, load_node_key, load_registry, write_registry
from fedseg.deploy.credentials import make_node_key
from fedseg.federation import protocol
from fedseg.federation.config import FederationConfig
from fedseg.metrics import SegmentationCounts
from server.strategy import FederatedSegmentation
from sites.records import model_from, seeds_records, ticket_from, update_records

SITES = ("A", "B", "C", "D", "E")
EXAMPLES = {"A": 10, "B": 20, "C": 30, "D": 40, "E": 50}


@pytest.fixture(autouse=True)
def task_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CKKS keys, one node key per site, a stranger's key, and the site registry."""
    root = tmp_path_factory.mktemp("credentials")
    generate_keys(root / "he")
    for name in (*SITES, "heldout", "stranger"):
        make_node_key(root / "node-keys", name)
    registry = build_registry([root / "node-keys" / f"{n}.pub" for n in (*SITES, "heldout")], dict(EXAMPLES))
    write_registry(root / "federation.json", registry)
    return root


def site_change(name: str, weights: dict) -> OrderedDict:
    """Each site's 'training': a deterministic, site-specific small change of every float tensor."""
    offset = (SITES.index(name) + 1) * 1e-2
    return OrderedDict((k, v + offset if v.dtype.is_floating_point else v.clone()) for k, v in weights.items())


@dataclass
class FakeSite:
    name: str
    role: str
    protection: SiteProtection
    root: Path
    behaviour: dict[str, Callable] = field(default_factory=dict)  # message type -> override
    initial: dict = field(default_factory=dict)
    min_sites: int = 1

    def answer(self, message: Message) -> Message | None:
        kind = message.metadata.message_type
        if kind in self.behaviour:
            return self.behaviour[kind](self, message)
        return getattr(self, kind.replace("query.", ""))(message)

    def describe(self, message: Message) -> Message:
        labelled = EXAMPLES.get(self.name, 5)
        info = {"site": self.name, "centre": self.name, "role": self.role, "labelled": labelled, "unlabelled": 0}
        return Message(RecordDict({protocol.SITE: ConfigRecord(info)}), reply_to=message)

    def plaintext(self, message: Message) -> dict:
        model = model_from(message.content)
        if isinstance(model, dict):
            return model
        he = load_context(self.root / "he" / "site.context", expect="site")
        return decrypt_average(model, he, Layout.of(self.initial))

    def train_reply(self, message: Message, examples: int | None = None) -> RecordDict:
        weights = site_change(self.name, self.plaintext(message))
        ticket = ticket_from(message.content)
        update = self.protection.protect(weights, examples or EXAMPLES[self.name], ticket)
        metrics = MetricRecord({protocol.NUM_EXAMPLES: EXAMPLES[self.name], "seconds": 1.0})
        return RecordDict({protocol.METRICS: metrics, **update_records(update)})

    def train(self, message: Message) -> Message:
        return Message(self.train_reply(message), reply_to=message)

    def unmask(self, message: Message) -> Message:
        request = message.content[protocol.CONFIG]
        dropped = tuple(s for s in str(request["dropped"]).split(",") if s)
        revealed = self.protection.reveal(ticket_from(message.content), dropped, min_sites=self.min_sites)
        return Message(RecordDict(seeds_records(revealed)), reply_to=message)

    def evaluate(self, message: Message) -> Message:
        self.plaintext(message)  # the evaluator must be able to open the global model
        counts = SegmentationCounts(n_images=2, dice_sum=1.5, tp=10, fp=1, fn=1)
        site = {"site": self.name, "centre": self.name, "role": self.role}
        return Message(
            RecordDict({protocol.SITE: ConfigRecord(site), protocol.COUNTS: MetricRecord(counts.to_dict())}),
            reply_to=message,
        )


class FakeGrid:
    def __init__(self, sites: dict[int, FakeSite]) -> None:
        self.sites = sites
        self.sent: list[str] = []

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for message in messages:
            self.sent.append(message.metadata.message_type)
            reply = self.sites[message.metadata.dst_node_id].answer(message)
            if reply is not None:
                replies.append(reply)
        return replies


def no_reply(site: FakeSite, message: Message) -> None:
    return None


def failing(site: FakeSite, message: Message) -> Message:
    return Message(Error(code=0, reason="site crashed"), reply_to=message)


def make_federation(
    root: Path, out: Path, *, trainers: tuple[str, ...], he: bool, registry: bool = True, behaviour=None, **extra
) -> tuple[FederatedSegmentation, FakeGrid]:
    site_map = ",".join([*trainers, "heldout:heldout"])
    extra = {"num_server_rounds": 5, "evaluate_every": 5, **extra}  # rounds 1-4 skip evaluation (fast)
    config = FederationConfig(
        site_map=site_map,
        out=str(out),
        model_options='{"widths": [4, 8]}',
        he=he,
        he_keys=str(root / "he") if he else "",
        registry=str(root / "federation.json") if registry else "",
        **extra,
    )
    grid_sites = {}
    for index, name in enumerate([*trainers, "heldout"]):
        protection = SiteProtection(
            name,
            he=load_context(root / "he" / "site.context", expect="site") if he and name != "heldout" else None,
            node_key=load_node_key(root / "node-keys" / f"{name}.key") if registry else None,
            registry=load_registry(root / "federation.json") if registry else None,
        )
        role = "heldout" if name == "heldout" else "train"
        grid_sites[100 + index] = FakeSite(
            name, role, protection, root, (behaviour or {}).get(name, {}), min_sites=config.min_train_sites
        )
    grid = FakeGrid(grid_sites)
    strategy = FederatedSegmentation(grid, config)  # type: ignore[arg-type]
    for site in grid_sites.values():
        site.initial = strategy.initial_weights()
    strategy.discover(strict=True)
    return strategy, grid
