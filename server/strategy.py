"""The federation's rounds, over Flower's Message API.

Every round the server asks each node who it is (node ids are not stable: a site that
restarts comes back with a new one), sends the global model to the training sites, averages
the updates of those that answered (FedAvg weighted by examples; FedProx runs at the sites),
and asks every site to score the new global model: held-out sites on all their images,
training sites on their validation images. A site that fails, times out, has spent its
privacy budget or sends a ciphertext that cannot be added is logged and left out; the round
goes on while ``min-train-sites`` updates remain.

With ``he = true`` the updates arrive as CKKS ciphertexts of (examples x weights); the server
adds them and the examples, and sends the encrypted sum back: the plaintext global model
never exists here (the server loads a context without any secret key).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedseg.configuration import ConfigError
from fedseg.crypto.keys import SERVER_FILE, HEContext, load_context
from fedseg.crypto.packing import EncryptedVector, Layout, add_encrypted
from fedseg.federation import protocol
from fedseg.federation.aggregation import merge_counts, weighted_average
from fedseg.federation.config import FederationConfig
from fedseg.federation.report import write_summary
from fedseg.federation.run_outputs import Model, RunFolder
from fedseg.metrics import SegmentationCounts
from fedseg.models import build_model
from fedseg.models.state import model_state
from sites.records import model_from, model_records

logger = logging.getLogger("fedseg.server")
FIRST_NODE_WAIT_SECONDS = 120.0  # the first round waits this long for every site to connect
LATER_NODE_WAIT_SECONDS = 5.0  # later rounds go on without a site that is not connected
TRAIN_METRICS = (
    "supervised_loss",
    "consistency_loss",
    "epsilon",
    "delta",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "seconds",
    "labelled",
    "unlabelled",
    "he_encrypt_seconds",
    "he_decrypt_seconds",
    "he_bytes_up",
)


def _log(message: str, *args: Any) -> None:
    logger.info(message, *args)


class FederationMismatch(ConfigError):
    """The nodes that joined are not the sites the run config names."""


class FederatedSegmentation:
    def __init__(self, grid: Grid, config: FederationConfig) -> None:
        self.grid, self.config = grid, config
        self.folder = RunFolder(Path(config.out), config)
        self.expected = {site.name: site for site in config.sites}
        if not self.expected:
            raise ConfigError("run config 'site-map' is empty: name the sites of the federation")
        if not config.training_sites:
            raise ConfigError("run config 'site-map' has no training site (only held-out ones)")
        self.he: HEContext | None = None
        if config.he:
            if not config.he_keys:
                raise ConfigError("he = true needs run config 'he-keys': the folder written by `fedseg keys`")
            self.he = load_context(Path(config.he_keys) / SERVER_FILE, expect="server")
        self.layout = Layout.of(self.initial_weights())

    # -- who is there ---------------------------------------------------------------------------
    def _wait_for_nodes(self, patience: float) -> list[int]:
        deadline = time.monotonic() + patience
        nodes = list(self.grid.get_node_ids())
        while len(nodes) < len(self.expected) and time.monotonic() < deadline:
            time.sleep(0.5)
            nodes = list(self.grid.get_node_ids())
        return nodes

    def discover(self, *, strict: bool) -> dict[int, dict[str, Any]]:
        """Ask every node which site it is; check the answers against the site map."""
        nodes = self._wait_for_nodes(FIRST_NODE_WAIT_SECONDS if strict else LATER_NODE_WAIT_SECONDS)
        messages = [Message(RecordDict({}), dst_node_id=n, message_type=f"query.{protocol.DESCRIBE}") for n in nodes]
        sites: dict[int, dict[str, Any]] = {}
        for reply in self.grid.send_and_receive(messages, timeout=min(self.config.round_timeout, 120.0)):
            if reply.has_error():
                _log("node %s could not describe itself: %s", reply.metadata.src_node_id, reply.error.reason)
                continue
            sites[reply.metadata.src_node_id] = dict(reply.content[protocol.SITE])
        names = [info["site"] for info in sites.values()]
        unexpected = sorted(set(names) - set(self.expected))
        duplicated = sorted({n for n in names if names.count(n) > 1})
        missing = sorted(set(self.expected) - set(names))
        if unexpected or duplicated or (strict and missing):
            raise FederationMismatch(
                f"the federation does not match run config 'site-map': missing sites {missing}, unexpected sites "
                f"{unexpected}, sites joined twice {duplicated}. Start one node per site-map entry "
                f"(simulation: --federation-config num-supernodes={len(self.expected)})."
            )
        for info in sites.values():
            if info["role"] != self.expected[info["site"]].role:
                raise FederationMismatch(
                    f"site {info['site']} says its role is {info['role']}, the run config says "
                    f"{self.expected[info['site']].role}"
                )
        return sites

    # -- one round ------------------------------------------------------------------------------
    def _send(self, nodes: list[int], message_type: str, model: Model, server_round: int) -> list[Message]:
        def content() -> RecordDict:
            return RecordDict({protocol.CONFIG: ConfigRecord({"server-round": server_round}), **model_records(model)})

        messages = [
            Message(content(), dst_node_id=n, message_type=message_type, group_id=str(server_round)) for n in nodes
        ]
        return list(self.grid.send_and_receive(messages, timeout=self.config.round_timeout))

    def _ledger_entry(self, site: str, server_round: int, values: dict[str, Any]) -> dict[str, Any]:
        return {
            "site": site,
            "round": server_round,
            "sampling_rate": values["sample_rate"],
            "noise_multiplier": values["noise_multiplier"],
            "steps": int(values["steps"]),
            "epsilon": values["epsilon"],
            "delta": values["delta"],
            "epsilon_budget": self.config.dp_epsilon,
            "budget_left": self.config.dp_epsilon - values["epsilon"],
        }

    def train_round(
        self, server_round: int, sites: dict[int, dict[str, Any]], model: Model
    ) -> tuple[list, dict, dict, list]:
        """Send the model to the training sites; returns (site, update, examples), metrics, left-out reasons, ledger."""
        nodes = [n for n, info in sites.items() if info["role"] == "train"]
        replies = self._send(nodes, "train", model, server_round)
        updates, metrics, left_out, ledger = [], {}, {}, []
        answered = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            site = sites.get(node, {}).get("site", f"node-{node}")
            answered.add(node)
            if reply.has_error():
                left_out[site] = f"failed: {reply.error.reason}"
                continue
            values = dict(reply.content[protocol.METRICS])
            if protocol.REFUSED in reply.content:
                left_out[site] = "privacy budget exhausted"
                ledger.append(
                    {
                        "site": site,
                        "round": server_round,
                        "refused": True,
                        "epsilon": values["epsilon"],
                        "delta": values["delta"],
                        "epsilon_budget": values["epsilon_budget"],
                        "budget_left": values["epsilon_budget"] - values["epsilon"],
                    }
                )
                continue
            examples = int(values[protocol.NUM_EXAMPLES])
            updates.append((site, model_from(reply.content), examples))
            metrics[site] = {"examples": examples, **{k: values[k] for k in TRAIN_METRICS if k in values}}
            if "epsilon" in values:
                ledger.append(self._ledger_entry(site, server_round, values))
        for node in set(nodes) - answered:
            left_out[sites[node]["site"]] = f"no reply within round-timeout ({self.config.round_timeout:.0f} s)"
        return updates, metrics, left_out, ledger

    def aggregate(
        self, updates: list[tuple[str, Model, int]], left_out: dict[str, str], metrics: dict[str, Any]
    ) -> Model | None:
        """FedAvg of plaintext updates, or the sum of encrypted ones. Refused updates go to ``left_out``."""
        if self.he is None:
            plain = [(u, float(n)) for _, u, n in updates if not isinstance(u, EncryptedVector)]
            return weighted_average(plain) if plain else None
        encrypted = []
        for site, update, _ in updates:
            if isinstance(update, EncryptedVector):
                encrypted.append((site, update))
            else:
                left_out[site] = "sent plaintext weights although he = true"
                metrics.pop(site, None)
        started = time.perf_counter()
        total, rejected = add_encrypted(
            [u for _, u in encrypted], self.he, layout_hash=self.layout.hash, length=self.layout.size
        )
        for index, reason in rejected.items():
            site = encrypted[index][0]
            left_out[site] = f"ciphertext rejected: {reason}"
            metrics.pop(site, None)
            _log("site %s: ciphertext rejected: %s", site, reason)
        metrics["_he"] = {
            "aggregate_seconds": time.perf_counter() - started,
            "bytes_down": total.nbytes if total is not None else 0,
        }
        return total

    def evaluate_round(
        self, server_round: int, sites: dict[int, dict[str, Any]], model: Model
    ) -> tuple[dict, dict, dict]:
        """Held-out scores by centre, validation scores by training site, and sites whose evaluation failed."""
        replies = self._send(list(sites), "evaluate", model, server_round)
        results, failed = [], {}
        for reply in replies:
            site = sites.get(reply.metadata.src_node_id, {}).get("site", "?")
            if reply.has_error():
                failed[site] = f"evaluation failed: {reply.error.reason}"
                continue
            results.append({**dict(reply.content[protocol.SITE]), "counts": dict(reply.content[protocol.COUNTS])})
        heldout = merge_counts([r for r in results if r["role"] == "heldout"], by="centre")
        validation = merge_counts([r for r in results if r["role"] == "train"], by="site")
        return heldout, validation, failed

    # -- the run --------------------------------------------------------------------------------
    def initial_weights(self) -> OrderedDict[str, torch.Tensor]:
        """The seeded, untrained model: public information, sent in plaintext in the first round."""
        torch.manual_seed(self.config.seed)
        return model_state(build_model(self.config.model_config))

    def _round(self, server_round: int, sites: dict[int, dict[str, Any]], model: Model) -> tuple[dict, Model | None]:
        started = time.monotonic()
        updates, metrics, left_out, ledger = self.train_round(server_round, sites, model)
        aggregated = self.aggregate(updates, left_out, metrics) if updates else None
        he_metrics = metrics.pop("_he", None)
        record: dict[str, Any] = {"round": server_round, "train": metrics, "left_out": left_out}
        if he_metrics is not None:
            record["he"] = he_metrics
        record["_ledger"] = ledger
        if aggregated is None or len(metrics) < self.config.min_train_sites:
            return record, None
        if server_round % self.config.evaluate_every == 0 or server_round == self.config.num_server_rounds:
            heldout, validation, failed = self.evaluate_round(server_round, sites, aggregated)
            left_out.update(failed)
            record["heldout"] = {c: {**k.summary(), "counts": k.to_dict()} for c, k in heldout.items()}
            record["validation"] = {s: k.summary() for s, k in validation.items()}
            record["heldout_dice"] = _pooled_mean(heldout.values())
            record["validation_dice"] = _pooled_mean(validation.values())
        record["seconds"] = time.monotonic() - started
        return record, aggregated

    def run(self) -> None:
        point = self.folder.start()
        model: Model = point.model if point else self.initial_weights()
        best = point.best_validation_dice if point else None
        first = point.round + 1 if point else 1
        stopped = None
        sites = self.discover(strict=True)
        _log(
            "federation: %s%s",
            ", ".join(f"{i['site']} ({i['role']})" for i in sites.values()),
            "; encrypted aggregation (CKKS)" if self.he else "",
        )
        for server_round in range(first, self.config.num_server_rounds + 1):
            if server_round > first:
                sites = self.discover(strict=False)
            record, aggregated = self._round(server_round, sites, model)
            for site, reason in record["left_out"].items():
                _log("round %d: %s left out: %s", server_round, site, reason)
            ledger = record.pop("_ledger")
            if aggregated is None:
                stopped = (
                    f"round {server_round}: {len(record['train'])} training site update(s) usable, fewer than "
                    f"min-train-sites = {self.config.min_train_sites}"
                )
                _log("stopping: %s", stopped)
                break
            model = aggregated
            self.folder.record_round(record, ledger)
            best = self.folder.save_models(
                server_round, model, validation_dice=record.get("validation_dice"), best_validation_dice=best
            )
            _log("round %d/%d: %s", server_round, self.config.num_server_rounds, _round_line(record))
        write_summary(self.folder.root, self.config.to_run_config(), self.folder.rounds_done(), stopped=stopped)
        self.folder.finish()  # final checkpoint and report to the tracker (fedseg.tracking)
        _log("run folder: %s (summary.md, rounds.jsonl, checkpoints/)", self.folder.root)


def _pooled_mean(counts: Any) -> float | None:
    total = SegmentationCounts()
    for item in counts:
        total = total.merge(item)
    value = total.summary()["dice"]
    return float(value) if value is not None else None


def _round_line(record: dict[str, Any]) -> str:
    parts = [
        f"held-out {c} Dice {v['dice']:.4f}" for c, v in record.get("heldout", {}).items() if v.get("dice") is not None
    ]
    if record.get("validation_dice") is not None:
        parts.append(f"validation Dice {record['validation_dice']:.4f}")
    epsilons = [m["epsilon"] for m in record["train"].values() if "epsilon" in m]
    if epsilons:
        parts.append(f"epsilon <= {max(epsilons):.3f}")
    if "he" in record:
        parts.append(f"encrypted sum in {record['he']['aggregate_seconds']:.1f} s")
    parts.append(f"{len(record['train'])} site(s) trained, {record['seconds']:.0f} s")
    return "; ".join(parts)
