"""Everything a site does for the federation, behind three calls: describe, train, evaluate.

The site's private state (EMA teacher, privacy accountant, step count) is kept on the site's
own disk (``state_dir``), written atomically after every round. A train request the site has
already answered (same round, same global weights: the server resumed after a crash) is
answered again from the stored reply, so that no privacy is spent twice and the result is
the same.
"""

from __future__ import annotations

import io
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
from fedseg.devices import resolve_device
from fedseg.evaluation.scoring import score_records
from fedseg.federation.config import FederationConfig
from fedseg.federation.protocol import weights_digest
from fedseg.federation.site import SiteTrainingConfig, train_site
from fedseg.federation.site_data import SiteData, load_site_data, select_site_records
from fedseg.federation.sites import SiteSpec
from fedseg.files import atomic_write_bytes
from fedseg.integrity import DamagedFileError, read_sealed_bytes, sealed_bytes
from fedseg.models import build_model
from fedseg.models.state import load_model_state, model_state
from fedseg.training.local import LocalState
from fedseg.volumes.inference import make_predictor

logger = logging.getLogger(__name__)

STATE_FILE = "state.bin"
REPLY_FILE = "last-reply.pt"
_STATE_FIX = (
    "Restore the site's state folder from a backup. It holds the site's privacy accounting: delete it only to "
    "start this site afresh in a new federation."
)
_REPLY_FIX = "Delete it: the site then trains this round again (and spends privacy budget on it again)."
_DATA_CACHE: OrderedDict[tuple, SiteData] = OrderedDict()
_CACHE_SIZE = 4


GlobalModel = Union[Mapping[str, torch.Tensor], EncryptedVector]


@dataclass(frozen=True)
class TrainReply:
    """Local weights (kept at the site), and ``update``: what leaves it (see ``fedseg.crypto.protection``)."""

    weights: OrderedDict[str, torch.Tensor] | None
    num_examples: int
    metrics: dict[str, Any]
    update: ProtectedUpdate | None = None


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
        protection: SiteProtection | None = None,
    ) -> None:
        if config.he and he is None:
            raise ConfigError(
                f"site {spec.name}: the run uses encrypted aggregation (he = true) but this site "
                "has no site.context; set run config 'he-keys' or node config 'he-keys'"
            )
        self.spec, self.config, self.he = spec, config, he
        self.protection = protection or SiteProtection(spec.name, he=he if spec.trains else None)
        self._decrypt_seconds = 0.0
        self.data_root, self.state_dir = Path(data_root), Path(state_dir)
        self.device = resolve_device(device)
        self.seed = config.seed + zlib.crc32(spec.name.encode()) % 100_000

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

    def _cached_reply(self, server_round: int, digest: str) -> TrainReply | None:
        path = self.state_dir / REPLY_FILE
        if not path.exists():
            return None
        saved = load_reply(path)
        if saved["round"] != server_round or saved["global"] != digest:
            return None
        logger.info("site %s: round %d was answered before; sending the same update", self.spec.name, server_round)
        return TrainReply(saved["weights"], int(saved["num_examples"]), saved["metrics"])

    def _store(self, server_round: int, digest: str, reply: TrainReply, state: LocalState) -> None:
        buffer = io.BytesIO()
        payload = {
            "round": server_round,
            "global": digest,
            "weights": reply.weights,
            "num_examples": reply.num_examples,
            "metrics": reply.metrics,
        }
        torch.save(payload, buffer)
        atomic_write_bytes(self.state_dir / REPLY_FILE, sealed_bytes(buffer.getvalue()), mode=0o600)
        atomic_write_bytes(self.state_dir / STATE_FILE, sealed_bytes(state.to_bytes()), mode=0o600)

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
        return TrainReply(reply.weights, reply.num_examples, metrics, update)

    def _train(self, server_round: int, global_model: GlobalModel) -> TrainReply:
        if not self.spec.trains:
            raise RuntimeError(f"site {self.spec.name} is a held-out evaluation site; it never trains")
        digest = global_digest(global_model)
        cached = self._cached_reply(server_round, digest)
        if cached is not None:
            return cached
        self._decrypt_seconds = 0.0
        global_weights = self.plaintext(global_model)
        config = SiteTrainingConfig(
            model=self.config.model_config,
            local=self.config.local_config,
            local_steps=self.config.local_steps,
            seed=self.seed,
            schedule_steps=self.config.schedule_steps if self.config.lr_schedule != "constant" else None,
            label=f"site {self.spec.name}, round {server_round}",
        )
        data = self.data
        assert data.train is not None
        started = time.perf_counter()
        update = train_site(global_weights, self._load_state(), data.train, config, device=self.device)
        logger.info("site %s: round %d trained in %.1f s", self.spec.name, server_round, time.perf_counter() - started)
        metrics = {**update.metrics, "labelled": data.n_labelled, "unlabelled": data.n_unlabelled}
        reply = TrainReply(update.weights, update.num_examples, metrics)
        self._store(server_round, digest, reply, update.state)
        return reply

    def privacy_spent(self) -> dict[str, float] | None:
        state = self._load_state()
        if state is None or state.privacy is None:
            return None
        return {
            "epsilon": state.privacy.epsilon(),
            "delta": state.privacy.delta,
            "epsilon_budget": state.privacy.epsilon_budget,
        }

    def evaluate(self, global_model: GlobalModel) -> dict[str, Any]:
        """Sums and counts of the global model on this site's evaluation images (whole images)."""
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
        return {
            "site": self.spec.name,
            "centre": self.spec.centre,
            "role": self.spec.role,
            "counts": result.counts.to_dict(),
            "unreadable": len(result.failures),
        }


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
