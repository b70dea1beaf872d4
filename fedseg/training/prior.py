"""A public prior: a model pre-trained on images fedseg generates itself, and starting training from a checkpoint.

Generated data costs no privacy, so DP fine-tuning may start from a model trained on it
(``fedseg prior``). The recipe is shipped, never a weight file: ``build_prior`` draws widely
varied synthetic images (:mod:`fedseg.data.synth`, ``style="varied"``) into the prior's folder,
trains on them pooled and without DP, and writes ``prior.pt``, a normal checkpoint whose
``meta["prior"]`` records how it was made; it names no real data. Runs start from it with
``fedseg train --init`` or the federation's ``init-checkpoint`` (:mod:`fedseg.training.initial`).

Prior folder::

    data/              the generated images (removed at the end unless ``keep_data``)
    run/               the pooled run (resumable: the same command continues it)
    prior.pt           the prior checkpoint
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.splits import SplitConfig
from fedseg.data.synth import KINDS, SynthConfig, generate
from fedseg.models import ModelConfig
from fedseg.models.checkpoint import load_checkpoint, save_checkpoint
from fedseg.training.config import OptimConfig, TrainConfig
from fedseg.training.pooled import train

logger = logging.getLogger(__name__)
GENERATOR = "fedseg.data.synth"


@dataclass(frozen=True)
class PriorConfig:
    """The recipe of a prior: what is generated, and how the model trains on it (pooled, no DP)."""

    out: Path
    model: ModelConfig = field(default_factory=ModelConfig)
    kind: str = "both"
    styles: int = 24
    images: int = 4
    size: int = 512
    steps: int = 600
    batch_size: int = 8
    crop_size: int = 256
    lr: float = 3e-3
    seed: int = 0
    device: str = "auto"
    keep_data: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        for name in ("styles", "images", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.model.spatial_dims != 2:
            raise ValueError(f"--model {self.model.name} is a 3D model; a prior is trained on 2D generated images")
        if self.crop_size > self.size:
            raise ValueError(f"--crop-size ({self.crop_size}) must be at most --size ({self.size})")

    @property
    def synth(self) -> SynthConfig:
        return SynthConfig(
            out=Path(self.out) / "data",
            centres=self.styles,
            images=self.images,
            size=self.size,
            seed=self.seed,
            kind=self.kind,
            style="varied",
        )

    def train_config(self, centres: tuple[str, ...]) -> TrainConfig:
        return TrainConfig(
            data=DataConfig(
                root=self.synth.out,
                centres=centres,
                channels=self.model.in_channels,
                crop=CropConfig(size=self.crop_size),
                split=SplitConfig(seed=self.seed, val_fraction=0.0),
            ),
            out=Path(self.out) / "run",
            model=self.model,
            optim=OptimConfig(lr=self.lr),
            steps=self.steps,
            batch_size=self.batch_size,
            seed=self.seed,
            device=self.device,
            workers=0,
            val_every=0,
            checkpoint_every=min(self.steps, 250),
        )

    def provenance(self) -> dict[str, Any]:
        """``meta["prior"]`` of the checkpoint: everything needed to make the same prior again."""
        return {
            "generator": GENERATOR,
            "style": "varied",
            "kind": self.kind,
            "seed": self.seed,
            "styles": self.styles,
            "images": self.styles * self.images,
            "size": self.size,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "crop_size": self.crop_size,
            "lr": self.lr,
        }


def build_prior(config: PriorConfig, *, progress: bool = True) -> Path:
    """Generate the prior's images, train on them and write ``OUT/prior.pt``; returns its path."""
    out = Path(config.out)
    appearances = generate(config.synth, progress=progress)
    run = config.train_config(tuple(a.name for a in appearances))
    result = train(run, resume=(run.out / "checkpoints" / "resume.pt").exists(), progress=progress, tracking="none")
    trained = load_checkpoint(result.last_checkpoint)
    path = save_checkpoint(
        out / "prior.pt",
        model=trained.build(),
        model_config=trained.model,
        preprocessing=trained.preprocessing,
        meta={"step": result.steps, "crop_size": config.crop_size, "prior": config.provenance()},
    )
    if not config.keep_data:
        shutil.rmtree(config.synth.out)
    return path
