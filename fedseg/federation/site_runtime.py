"""Everything a site does for the federation, behind three calls: describe, train, evaluate.

The site's private state (EMA teacher, privacy accountant, step count) is kept on the site's
own disk (``state_dir``), written atomically after every round, always before anything that
could be sent again: a crash between two writes may make the site redo (and count) work, never
send something its accountant does not hold. A train request the site has already answered
(same round, same global weights: the server resumed after a crash) is answered again from the
stored reply, and an evaluation of a model it has scored before from ``evaluations.json``, so
that no privacy is spent twice and the result is the same.

What a reply may contain is decided by ``fedseg.privacy.release``: under DP, losses and timing
stay at the site and a training site's validation score leaves only through the accounted
Gaussian mechanism. Every site answers at most ``max_evaluations`` distinct models.
"""

from __future__ import annotations

import io
import json
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch

from fedseg.configuration import ConfigError
from fedseg.crypto.keys import HEContext
from fedseg.crypto.packing import EncryptedVector, Layout, decrypt_average
from fedseg.crypto.protection import ProtectedUpdate, RoundTicket, SiteProtection
from fedseg.data.grouping import subject_ids
from fedseg.devices import resolve_device
from fedseg.evaluation.scoring import CentreResult, score_records
from fedseg.federation.config import FederationConfig
from fedseg.federation.protocol import weights_digest
from fedseg.federation.site import train_site
from fedseg.federation.site_data import SiteData, load_site_data, select_site_records
from fedseg.federation.sites import SiteSpec
from fedseg.files import atomic_write_bytes
from fedseg.integrity import DamagedFileError, read_sealed_bytes, sealed, sealed_bytes, unsealed
from fedseg.models import build_model
from fedseg.models.state import load_model_state, model_state
from fedseg.privacy.budget import PrivacyBudgetExhausted
from fedseg.privacy.ledger import LedgerRow
from fedseg.privacy.release import gaussian_release, releasable
from fedseg.training.local import LocalState
from fedseg.volumes.inference import make_predictor

logger = logging.getLogger(__name__)

STATE_FILE = "state.bin"
REPLY_FILE = "last-reply.pt"
EVALUATIONS_FILE = "evaluations.json"
DEFAULT_MAX_EVALUATIONS = 100
_STATE_FIX = (
    "Restore the site's state folder from a backup. It holds the site's privacy accounting: delete it only to "
    "start this site afresh in a new federation."
)
_REPLY_FIX = "Delete it: the site then trains this round again (and spends privacy budget on it again)."
_EVALUATIONS_FIX = (
    "Restore the site's state folder from a backup. It counts the models this site scored (node config "
    "'max-evaluations'): delete it only to start this site afresh in a new federation."
)
_DATA_CACHE: OrderedDict[tuple, SiteData] = OrderedDict()
_CACHE_SIZE = 4


GlobalModel = Union[Mapping[str, torch.Tensor], EncryptedVector]


class EvaluationLimitReached(RuntimeError):
    """The site has scored as many distinct models as its ``max-evaluations`` allows."""


@dataclass(frozen=True)
class TrainReply:
    """Local weights (kept at the site), ``update``: what leaves it (see ``fedseg.crypto.protection``), and
    under DP the ledger row of the update. ``metrics`` hold only what may leave (``fedseg.privacy.release``)."""

    weights: OrderedDict[str, torch.Tensor] | None
    num_examples: int
    metrics: dict[str, Any]
    update: ProtectedUpdate | None = None
    ledger: LedgerRow | None = None


def global_digest(model: GlobalModel) -> str:
    return model.digest if isinstance(model, EncryptedVector) else weights_digest(model)


def _cached_site_data(spec: SiteSpec, root: Path, config: FederationConfig) -> SiteData:
    """Site images stay loaded between rounds of one process (a simulation runs many sites per process)."""
    key = (
        spec,
        str(root),
        config.seed,
        config.val_fraction,
        config.test_fraction,
        config.label_fraction,
        config.channels,
        config.resize,
        config.crop_size,
        config.foreground_probability,
        config.augment,
        config.normalisation,
        config.volume_spacing,
        config.patch_slices,
        config.model_config.spatial_dims,
    )
    if key not in _DATA_CACHE:
        started = time.perf_counter()
        _DATA_CACHE[key] = load_site_data(spec, root, config)
        logger.info("site %s: loaded its images in %.1f s", spec.name, time.perf_counter() - started)
        while len(_DATA_CACHE) > _CACHE_SIZE:
            _DATA_CACHE.popitem(last=False)
    _DATA_CACHE.move_to_end(key)
    return _DATA_CACHE[key]


class SiteRuntime:
    def __init__(
        self,
        spec: SiteSpec,
        config: FederationConfig,
        *,
        data_root: Path,
        state_dir: Path,
        device: str = "auto",
        he: HEContext | None = None,
        max_evaluations: int = DEFAULT_MAX_EVALUATIONS,
        protection: SiteProtection | None = None,
    ) -> None:
        if config.he and he is None:
            raise ConfigError(
                f"site {spec.name}: the run uses encrypted aggregation (he = true) but this site "
                "has no site.context; set run config 'he-keys' or node config 'he-keys'"
            )
        self.spec, self.config, self.he, self.max_evaluations = spec, config, he, max_evaluations
        self.protection = protection or SiteProtection(spec.name, he=he if spec.trains else None)
        self._decrypt_seconds = 0.0
        self.data_root, self.state_dir = Path(data_root), Path(state_dir)
        self.device = resolve_device(device)
        self.seed = config.seed + zlib.crc32(spec.name.encode()) % 100_000

    @property
    def private(self) -> bool:
        """Whether this site trains under DP (a held-out site never trains)."""
        return self.spec.trains and self.config.privacy is not None

    @property
    def data(self) -> SiteData:
        return _cached_site_data(self.spec, self.data_root, self.config)

    def describe(self) -> dict[str, Any]:
        """Who this site is and how many images it has (from file names only: cheap, loads nothing)."""
        chosen = select_site_records(self.spec, self.data_root, self.config)
        return {
            "site": self.spec.name,
            "centre": self.spec.centre,
            "role": self.spec.role,
            "labelled": len(chosen.labelled),
            "unlabelled": len(chosen.train) - len(chosen.labelled),
            "evaluation": len(chosen.evaluation),
        }

    # -- state ----------------------------------------------------------------------------------
    def _load_state(self) -> LocalState | None:
        path = self.state_dir / STATE_FILE
        return load_site_state(path) if path.exists() else None

    def _write_state(self, state: LocalState) -> None:
        atomic_write_bytes(self.state_dir / STATE_FILE, sealed_bytes(state.to_bytes()), mode=0o600)

    def _cached_reply(self, server_round: int, digest: str) -> TrainReply | None:
        path = self.state_dir / REPLY_FILE
        if not path.exists():
            return None
        saved = load_reply(path)
        if saved["round"] != server_round or saved["global"] != digest:
            return None
        logger.info("site %s: round %d was answered before; sending the same update", self.spec.name, server_round)
        ledger = LedgerRow.from_json(saved["ledger"]) if saved.get("ledger") else None
        return TrainReply(saved["weights"], int(saved["num_examples"]), saved["metrics"], ledger=ledger)

    def _store(self, server_round: int, digest: str, reply: TrainReply, state: LocalState) -> None:
        """The state (with the accountant) first, then the reply that a repeated request would get."""
        self._write_state(state)
        buffer = io.BytesIO()
        payload = {
            "round": server_round,
            "global": digest,
            "weights": reply.weights,
            "num_examples": reply.num_examples,
            "metrics": reply.metrics,
            "ledger": reply.ledger.to_json() if reply.ledger is not None else None,
        }
        torch.save(payload, buffer)
        atomic_write_bytes(self.state_dir / REPLY_FILE, sealed_bytes(buffer.getvalue()), mode=0o600)

    # -- federation calls -----------------------------------------------------------------------
    def plaintext(self, model: GlobalModel) -> Mapping[str, torch.Tensor]:
        """The global weights: decrypted and divided by the total weight when they arrive encrypted."""
        if not isinstance(model, EncryptedVector):
            return model
        if self.he is None:
            raise ConfigError(f"site {self.spec.name} received an encrypted model but holds no site.context")
        started = time.perf_counter()
        weights = decrypt_average(model, self.he, Layout.of(model_state(build_model(self.config.model_config))))
        self._decrypt_seconds = time.perf_counter() - started
        return weights

    def train(self, server_round: int, global_model: GlobalModel, ticket: RoundTicket | None = None) -> TrainReply:
        """One round of local training, its update protected for ``ticket``'s round.

        Raises ``PrivacyBudgetExhausted`` when over budget, ``RoundRefused`` for a ticket it must not answer.
        """
        reply = self._train(server_round, global_model)
        if ticket is None:
            return reply
        update = self.protection.protect(reply.weights, reply.num_examples, ticket)  # type: ignore[arg-type]
        metrics = dict(reply.metrics)
        if isinstance(update.payload, EncryptedVector):
            metrics.update(
                he_encrypt_seconds=update.seconds,
                he_decrypt_seconds=self._decrypt_seconds,
                he_bytes_up=update.payload.nbytes,
            )
        return TrainReply(reply.weights, reply.num_examples, self._releasable(metrics), update, reply.ledger)

    def _train(self, server_round: int, global_model: GlobalModel) -> TrainReply:
        if not self.spec.trains:
            raise RuntimeError(f"site {self.spec.name} is a held-out evaluation site; it never trains")
        digest = global_digest(global_model)
        cached = self._cached_reply(server_round, digest)
        if cached is not None:
            return cached
        self._decrypt_seconds = 0.0
        global_weights = self.plaintext(global_model)
        data = self.data
        assert data.train is not None
        config = self.config.site_training_config(
            seed=self.seed,
            label=f"site {self.spec.name}, round {server_round}",
            releases=bool(data.evaluation),  # no validation images: no releases to plan for
        )
        started = time.perf_counter()
        update = train_site(global_weights, self._load_state(), data.train, config, device=self.device)
        metrics = {**update.metrics, "labelled": data.n_labelled, "unlabelled": data.n_unlabelled}
        seconds = time.perf_counter() - started
        logger.info(
            "site %s: round %d trained in %.1f s: %s", self.spec.name, server_round, seconds, _metrics_line(metrics)
        )
        ledger = None
        if update.state.privacy is not None:
            ledger = update.state.privacy.ledger_row(
                site=self.spec.name, round=server_round, kind="update", steps=self.config.local_steps
            )
        reply = TrainReply(update.weights, update.num_examples, self._releasable(metrics), ledger=ledger)
        self._store(server_round, digest, reply, update.state)
        return reply

    def _releasable(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return releasable("train", self.spec.role, "metrics", metrics, dp=self.private)

    def refusal_row(self, server_round: int) -> LedgerRow | None:
        """The ledger row of a refused round (budget exhausted: nothing released)."""
        state = self._load_state()
        if state is None or state.privacy is None:
            return None
        return state.privacy.ledger_row(site=self.spec.name, round=server_round, kind="refused")

    def privacy_spent(self) -> dict[str, float] | None:
        state = self._load_state()
        if state is None or state.privacy is None:
            return None
        return {
            "epsilon": state.privacy.get_epsilon(),
            "delta": state.privacy.delta,
            "epsilon_budget": state.privacy.epsilon_budget,
        }

    # -- evaluation -----------------------------------------------------------------------------
    def _answered(self) -> dict[str, Any]:
        path = self.state_dir / EVALUATIONS_FILE
        return load_evaluations(path) if path.exists() else {}

    def _remember(self, answered: dict[str, Any]) -> None:
        save_evaluations(self.state_dir / EVALUATIONS_FILE, answered)

    def evaluate(self, global_model: GlobalModel, *, server_round: int = 0) -> dict[str, Any]:
        """Sums and counts of the global model on this site's evaluation images (whole images).

        Under DP a training site sends its validation score through the Gaussian mechanism (or keeps
        it, with ``dp-validation-noise = 0``). A model scored before gets the same answer; a site
        answers at most ``max_evaluations`` distinct models.
        """
        digest = global_digest(global_model)
        answered = self._answered()
        if digest in answered:
            return answered[digest]
        if len(answered) >= self.max_evaluations:
            raise EvaluationLimitReached(
                f"site {self.spec.name} has scored {len(answered)} models, its limit (node config 'max-evaluations' "
                f"= {self.max_evaluations}, kept in {self.state_dir / EVALUATIONS_FILE}); the hospital may raise it"
            )
        result = self._score(global_model)
        counts: dict[str, Any] = result.counts.to_dict()
        ledger = None
        if self.private:
            counts, ledger = self._release_validation(result, server_round)
        reply = {
            "site": self.spec.name,
            "centre": self.spec.centre,
            "role": self.spec.role,
            "counts": releasable("evaluate", self.spec.role, "counts", counts, dp=self.private),
            "ledger": ledger.to_json() if ledger is not None else None,
        }
        self._remember({**answered, digest: reply})
        return reply

    def _score(self, global_model: GlobalModel) -> CentreResult:
        model = build_model(self.config.model_config)
        load_model_state(model, self.plaintext(global_model))
        inference = self.config.inference_config
        predictor = make_predictor(
            model,
            self.config.preprocessing,
            inference.tiling({}),
            tta=False,
            device=self.device,
            patch_slices=self.config.patch_slices,
        )
        records = self.data.evaluation
        started = time.perf_counter()
        result = score_records(
            predictor, records, threshold=inference.threshold, with_hd95=not self.spec.trains, progress=False
        )
        logger.info("site %s: scored %d images in %.1f s", self.spec.name, len(records), time.perf_counter() - started)
        return result

    def _release_validation(self, result: CentreResult, server_round: int) -> tuple[dict[str, Any], LedgerRow | None]:
        """The validation score through the Gaussian mechanism: accounted, and the state written, before it
        leaves. Nothing is released without validation images, with 'dp-validation-noise' 0 or over budget."""
        dice = _unit_dice(result.rows, self.config.privacy_unit)
        state = self._load_state()
        exact = sum(dice) / len(dice) if dice else None
        logger.info("site %s: validation Dice %s (exact; stays at the site)", self.spec.name, exact)
        if not dice or state is None or state.privacy is None or not state.privacy.release_noise > 0:
            return {}, None
        try:
            state.privacy.check(releases=1)
        except PrivacyBudgetExhausted as refused:
            logger.warning("site %s: validation score not released: %s", self.spec.name, refused)
            return {}, None
        noised = gaussian_release(dice, state.privacy, upper=len(dice))
        self._write_state(state)
        row = state.privacy.ledger_row(site=self.spec.name, round=server_round, kind="validation")
        return {"n_images": len(dice), "dice_sum": noised}, row


def _unit_dice(rows: list[dict[str, Any]], unit: str) -> list[float]:
    """Dice per privacy unit: per image, or the mean over each subject's images."""
    if unit == "image":
        return [float(row["dice"]) for row in rows]
    subjects = subject_ids([(row["centre"], row["image"]) for row in rows], {})
    by_subject: dict[str, list[float]] = {}
    for subject, row in zip(subjects, rows):
        by_subject.setdefault(subject, []).append(float(row["dice"]))
    return [sum(values) / len(values) for values in by_subject.values()]


def _metrics_line(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))


def load_site_state(path: Path) -> LocalState:
    """A site's ``state.bin``, checked; damage raises ``DamagedFileError`` naming the file."""
    data = read_sealed_bytes(path, what="site state", fix=_STATE_FIX)
    try:
        return LocalState.from_bytes(data)
    except Exception as error:  # an unsealed file from older fedseg: torch raises many types
        raise DamagedFileError(f"{path}: damaged site state ({type(error).__name__}). {_STATE_FIX}") from None


def load_reply(path: Path) -> dict[str, Any]:
    """A site's ``last-reply.pt``, checked; damage raises ``DamagedFileError`` naming the file."""
    data = read_sealed_bytes(path, what="stored reply", fix=_REPLY_FIX)
    try:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not {"round", "global", "weights", "num_examples", "metrics"} <= set(saved):
            raise KeyError("fields missing")
    except Exception as error:  # an unsealed file from older fedseg: torch raises many types
        raise DamagedFileError(f"{path}: damaged stored reply ({type(error).__name__}). {_REPLY_FIX}") from None
    return saved


def save_evaluations(path: Path, models: dict[str, Any]) -> None:
    """``evaluations.json``: the reply to every model the site scored, by digest, with a checksum."""
    atomic_write_bytes(path, json.dumps(sealed({"models": models}), indent=1).encode(), mode=0o600)


def load_evaluations(path: Path) -> dict[str, Any]:
    """The models a site scored (``evaluations.json``: digest to reply), checked; damage raises
    ``DamagedFileError`` naming the file."""
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as error:  # bad JSON or bad UTF-8
        raise DamagedFileError(f"{path}: damaged evaluation record ({error}). {_EVALUATIONS_FIX}") from None
    models = unsealed(payload, path, what="evaluation record", keys={"models"}, fix=_EVALUATIONS_FIX)["models"]
    if not isinstance(models, dict) or not all(isinstance(reply, dict) for reply in models.values()):
        raise DamagedFileError(f"{path}: damaged evaluation record (not a table of replies). {_EVALUATIONS_FIX}")
    return models
