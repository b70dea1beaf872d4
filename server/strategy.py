"""The federation's rounds, over Flower's Message API, with Flower's strategy hook names.

Each round: ``discover`` which node is which site, ``configure_train`` (the global model and the
round's ticket to the training sites), ``aggregate_train`` (authenticate each update, then the
``Aggregator``: FedAvg in plaintext, or the encrypted, masked sum), ``configure_evaluate`` and
``aggregate_evaluate`` (every site scores the new global model: held-out sites on all their
images, training sites on their validation images). A site that fails, times out, has spent its
privacy budget or sends an update that is refused is left out with its reason in rounds.jsonl;
the round goes on while ``min-train-sites`` updates remain.

With ``he = true`` the server holds ``server.context`` (no secret key) and never sees a
plaintext update or global model; with a site registry (``registry``) every update must be
signed by its site's node key and is masked, so that no single key holder can read one site's
update either.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedseg.configuration import ConfigError
from fedseg.crypto.keys import SERVER_FILE, load_context
from fedseg.crypto.packing import Layout
from fedseg.crypto.protection import RevealedSeeds, RoundTicket
from fedseg.crypto.registry import SiteRegistry, load_registry
from fedseg.crypto.signing import UpdateRejected
from fedseg.federation import protocol
from fedseg.federation.aggregation import merge_counts
from fedseg.federation.config import FederationConfig
from fedseg.federation.report import write_summary
from fedseg.federation.run_outputs import RunFolder
from fedseg.models import build_model
from fedseg.models.checkpoint import CheckpointError
from fedseg.models.state import model_state
from fedseg.privacy.ledger import LedgerRow
from fedseg.training.initial import initial_weights
from server.aggregators import Aggregator, Contribution, EncryptedAggregator, PlaintextAggregator
from server.discovery import SiteInfo, discover
from server.outcome import EvaluationOutcome, RoundOutcome, TrainOutcome, received_row
from server.updates import authenticate, authenticate_seeds
from sites.records import TICKET, Model, model_records, seeds_from, ticket_record, update_from

logger = logging.getLogger("fedseg.server")


def _numbers(record: Mapping) -> dict[str, float]:
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _record_of(reply: Message, name: str) -> dict | None:
    return dict(reply.content[name]) if name in reply.content else None


class FederatedSegmentation:
    def __init__(self, grid: Grid, config: FederationConfig) -> None:
        self.grid, self.config = grid, config
        self.expected = {site.name: site for site in config.sites}
        if not self.expected:
            raise ConfigError("run config 'site-map' is empty: name the sites of the federation")
        if not config.training_sites:
            raise ConfigError("run config 'site-map' has no training site (only held-out ones)")
        self.folder = RunFolder(Path(config.out), config)
        self.registry: SiteRegistry | None = load_registry(config.registry) if config.registry else None
        self.layout = Layout.of(self.initial_weights())
        self.aggregator = self._aggregator()
        self.run_id = secrets.token_hex(16)
        self.sites: dict[int, SiteInfo] = {}
        self.ticket: RoundTicket | None = None

    def _aggregator(self) -> Aggregator:
        if not self.config.he:
            return PlaintextAggregator()
        if not self.config.he_keys:
            raise ConfigError("he = true needs run config 'he-keys': the folder written by `fedseg keys`")
        he = load_context(Path(self.config.he_keys) / SERVER_FILE, expect="server")
        return EncryptedAggregator(
            he, self.layout, masked=self.registry is not None, min_sites=self.config.min_train_sites
        )

    def initial_weights(self) -> OrderedDict[str, torch.Tensor]:
        """The first global model, sent in plaintext in the first round: the run config's 'init-checkpoint'
        (e.g. a public prior from `fedseg prior`), else the seeded, untrained model."""
        if self.config.init_checkpoint:
            try:
                return initial_weights(Path(self.config.init_checkpoint), self.config.model_config)
            except CheckpointError as error:
                raise ConfigError(f"run config 'init-checkpoint': {error}") from None
        torch.manual_seed(self.config.seed)
        return model_state(build_model(self.config.model_config))

    def _site(self, node: int) -> SiteInfo | None:
        return self.sites.get(node)

    def _bound(self, info: SiteInfo) -> int:
        """The most examples an update of this site may claim: its registration, else its description."""
        registered = (
            self.registry.sites[info.site].max_examples if self.registry and info.site in self.registry.sites else 0
        )
        return min(registered, info.training_images) if registered else info.training_images

    # -- Flower's strategy hooks ----------------------------------------------------------------
    def configure_train(self, server_round: int, model: Model) -> list[Message]:
        trainers = sorted((i for i in self.sites.values() if i.trains), key=lambda i: i.site)
        self.ticket = RoundTicket(
            self.run_id,
            server_round,
            tuple(i.site for i in trainers),
            max(1, sum(self._bound(i) for i in trainers)),
            len(self.config.training_sites),
        )
        return [
            Message(
                self._content(server_round, model, ticket=True),
                dst_node_id=i.node_id,
                message_type="train",
                group_id=str(server_round),
            )
            for i in trainers
        ]

    def _content(self, server_round: int, model: Model, *, ticket: bool) -> RecordDict:
        records = {protocol.CONFIG: ConfigRecord({"server-round": server_round}), **model_records(model)}
        if ticket and self.ticket is not None:
            records[TICKET] = ticket_record(self.ticket)
        return RecordDict(records)

    def aggregate_train(self, server_round: int, replies: Iterable[Message], *, current: Model) -> TrainOutcome:
        """Authenticate each reply, aggregate the accepted updates; every refusal is kept with its reason."""
        if self.ticket is None or self.ticket.round != server_round:
            raise RuntimeError("aggregate_train before configure_train for this round")
        ticket = self.ticket
        contributions: list[Contribution] = []
        metrics: dict[str, dict[str, float]] = {}
        left_out: dict[str, str] = {}
        ledger: list[LedgerRow] = []
        answered: set[str] = set()
        for reply in replies:
            info = self._site(reply.metadata.src_node_id)
            site = info.site if info else f"node-{reply.metadata.src_node_id}"
            answered.add(site)
            if info is None or not info.trains:
                left_out[site] = "rejected: not a training site of this round"
                continue
            if reply.has_error():
                left_out[site] = f"failed: {reply.error.reason}"
                continue
            values = _numbers(dict(reply.content[protocol.METRICS])) if protocol.METRICS in reply.content else {}
            refused = protocol.REFUSED in reply.content
            row = received_row(_record_of(reply, protocol.LEDGER), site, server_round)
            ledger += [row] if row is not None else []
            if refused:
                left_out[site] = "privacy budget exhausted"
                continue
            try:
                update = update_from(reply.content)
                contributions.append(
                    authenticate(
                        update, site=site, ticket=ticket, registry=self.registry, max_examples=self._bound(info)
                    )
                )
            except UpdateRejected as error:
                left_out[site] = f"rejected: {error}"
                continue
            values.pop(protocol.NUM_EXAMPLES, None)
            metrics[site] = {"examples": contributions[-1].examples, **values}
        for site in set(ticket.participants) - answered:
            left_out[site] = f"no reply within round-timeout ({self.config.round_timeout:.0f} s)"
        aggregate = self.aggregator.aggregate(contributions, current=current, ticket=ticket, reveal=self._reveal)
        left_out.update(
            {
                site: reason if reason.startswith("left out") else f"rejected: {reason}"
                for site, reason in aggregate.rejected.items()
            }
        )
        train = {site: metrics[site] for site in aggregate.accepted}
        usable = aggregate.model is not None and len(train) >= self.config.min_train_sites
        return TrainOutcome(aggregate.model if usable else None, train, left_out, tuple(ledger), aggregate.stats)

    def _reveal(self, survivors: Sequence[str], dropped: Sequence[str]) -> dict[str, RevealedSeeds | str]:
        """Ask the survivors for this round's seeds with the sites that dropped out (masked mode only)."""
        if self.ticket is None:
            raise RuntimeError("unmasking outside a round")
        nodes = {i.site: i.node_id for i in self.sites.values()}
        request = {"dropped": ",".join(sorted(dropped))}
        messages = [
            Message(
                RecordDict({TICKET: ticket_record(self.ticket), protocol.CONFIG: ConfigRecord(request)}),
                dst_node_id=nodes[s],
                message_type=f"query.{protocol.UNMASK}",
            )
            for s in survivors
        ]
        answers: dict[str, RevealedSeeds | str] = {s: "no reply" for s in survivors}
        for reply in self.grid.send_and_receive(messages, timeout=min(self.config.round_timeout, 300.0)):
            info = self._site(reply.metadata.src_node_id)
            if info is None or info.site not in answers:
                continue
            if reply.has_error():
                answers[info.site] = f"failed: {reply.error.reason}"
                continue
            try:
                answers[info.site] = authenticate_seeds(
                    seeds_from(reply.content),
                    site=info.site,
                    ticket=self.ticket,
                    dropped=tuple(dropped),
                    registry=self.registry,
                )
            except UpdateRejected as error:
                answers[info.site] = str(error)
        logger.info("round %d: unmasking the sum for sites that dropped out: %s", self.ticket.round, ", ".join(dropped))
        return answers

    def configure_evaluate(self, server_round: int, model: Model) -> list[Message]:
        return [
            Message(
                self._content(server_round, model, ticket=False),
                dst_node_id=n,
                message_type="evaluate",
                group_id=str(server_round),
            )
            for n in self.sites
        ]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> EvaluationOutcome:
        results, failed, ledger = [], {}, []
        for reply in replies:
            info = self._site(reply.metadata.src_node_id)
            site = info.site if info else f"node-{reply.metadata.src_node_id}"
            if reply.has_error():
                failed[site] = f"evaluation failed: {reply.error.reason}"
                continue
            results.append({**dict(reply.content[protocol.SITE]), "counts": dict(reply.content[protocol.COUNTS])})
            row = received_row(_record_of(reply, protocol.LEDGER), site, server_round)
            ledger += [row] if row is not None else []
        heldout = merge_counts([r for r in results if r["role"] == "heldout"], by="centre")
        validation = merge_counts([r for r in results if r["role"] == "train"], by="site")
        return EvaluationOutcome(heldout, validation, failed, tuple(ledger))

    # -- the run --------------------------------------------------------------------------------
    def run_round(self, server_round: int, model: Model) -> RoundOutcome:
        started = time.monotonic()
        timeout = self.config.round_timeout
        replies = self.grid.send_and_receive(self.configure_train(server_round, model), timeout=timeout)
        training = self.aggregate_train(server_round, replies, current=model)
        evaluation = None
        due = server_round % self.config.evaluate_every == 0 or server_round == self.config.num_server_rounds
        if training.model is not None and due:
            replies = self.grid.send_and_receive(self.configure_evaluate(server_round, training.model), timeout=timeout)
            evaluation = self.aggregate_evaluate(server_round, replies)
        return RoundOutcome(server_round, training, evaluation, time.monotonic() - started)

    def _record(self, outcome: RoundOutcome) -> None:
        """Append the round to rounds.jsonl and its ledger rows to privacy.jsonl (the one place that writes them)."""
        self.folder.record_round(outcome.record(), [row.to_json() for row in outcome.ledger])

    def discover(self, *, strict: bool) -> dict[int, SiteInfo]:
        self.sites = discover(self.grid, self.expected, strict=strict, timeout=self.config.round_timeout)
        return self.sites

    def run(self) -> None:
        point = self.folder.start()
        model: Model = point.model if point else self.initial_weights()
        best = point.best_validation_dice if point else None
        first = point.round + 1 if point else 1
        stopped = None
        self.discover(strict=True)
        mode = getattr(self.aggregator, "masked", None)
        logger.info(
            "federation: %s; %s",
            ", ".join(f"{i.site} ({i.role})" for i in self.sites.values()),
            "plaintext FedAvg" if mode is None else ("encrypted, masked sum" if mode else "encrypted sum (single key)"),
        )
        for server_round in range(first, self.config.num_server_rounds + 1):
            if server_round > first:
                self.discover(strict=False)
            outcome = self.run_round(server_round, model)
            if self.folder.stop_requested():
                stopped = f"asked to stop ({self.folder.stop_request}) in round {server_round}, which was not recorded"
                logger.info("stopping: %s; it runs again when the run resumes", stopped)
                break
            for site, reason in outcome.left_out.items():
                logger.info("round %d: %s left out: %s", server_round, site, reason)
            if outcome.training.model is None:
                reasons = "; ".join(f"{site}: {reason}" for site, reason in sorted(outcome.left_out.items()))
                stopped = (
                    f"round {server_round}: {len(outcome.training.train)} training site update(s) usable, fewer "
                    f"than min-train-sites = {self.config.min_train_sites} (left out: {reasons or 'none'})"
                )
                logger.info("stopping: %s", stopped)
                break
            model = outcome.training.model
            self._record(outcome)
            best = self.folder.save_models(
                server_round, model, validation_dice=outcome.validation_dice, best_validation_dice=best
            )
            logger.info(outcome.summary_line(self.config.num_server_rounds))
        write_summary(self.folder.root, self.config.to_run_config(), self.folder.rounds_done(), stopped=stopped)
        self.folder.finish()  # final checkpoint and report to the tracker (fedseg.tracking)
        logger.info("run folder: %s (summary.md, rounds.jsonl, checkpoints/)", self.folder.root)
