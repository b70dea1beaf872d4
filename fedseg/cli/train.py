"""``fedseg train``: pooled training on one or more centres."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedseg.cli.common import add_device, csv_list, key_value, positive_int
from fedseg.configuration import FlatSection
from fedseg.data.augment import AUGMENT_PRESETS, AugmentConfig
from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.normalise import NORMALISATIONS
from fedseg.data.splits import SplitConfig
from fedseg.inference.sliding_window import TilingConfig, default_tile_size
from fedseg.models import ModelConfig, available_models
from fedseg.privacy.budget import UNITS, PrivacyConfig
from fedseg.tracking import DEFAULT_TRACKING, TrackingConfig
from fedseg.training.config import TrainConfig
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.training.pooled import train
from fedseg.training.settings import HELP, LOSS, OPTIM, TEACHER, supervised_perturbation
from fedseg.volumes.config import VolumeConfig
from fedseg.volumes.plan import plan_for_dataset

logger = logging.getLogger(__name__)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", type=Path, required=True, help="dataset root: one folder per centre")
    group.add_argument("--centres", type=csv_list, required=True, help="comma-separated centres to train on")
    group.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="image channels, or slices per 2.5D stack (default 3)",
    )
    group.add_argument("--resize", type=int, default=None, help="scale each image's longer side to this at load")
    group.add_argument("--crop-size", type=int, default=256)
    group.add_argument(
        "--foreground-probability",
        type=float,
        default=0.5,
        help="probability a crop is drawn around a foreground pixel (default: 0.5)",
    )
    group.add_argument("--augment", choices=AUGMENT_PRESETS, default="strong", help="augmentation preset")
    group.add_argument("--val-fraction", type=float, default=0.15)
    group.add_argument("--test-fraction", type=float, default=0.0)
    group.add_argument(
        "--label-fraction", type=float, default=1.0, help="fraction of training images whose masks are used"
    )
    group.add_argument(
        "--group-pattern",
        action="append",
        type=key_value,
        default=[],
        metavar="CENTRE=REGEX",
        help="keep a subject's images together: the regex's first group is the subject id",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split, model initialisation, crops and batches, so that runs without DP repeat "
        "exactly; under DP the batches (and their crops) come from OS entropy, never from this seed",
    )
    group.add_argument("--normalisation", choices=NORMALISATIONS, default="image", help="per-crop (image) or none")
    volumes = parser.add_argument_group("volumes (NIfTI, DICOM series, NRRD, MetaImage)")
    volumes.add_argument(
        "--volume-spacing", type=float, default=None, help="resample volumes in-plane to this many mm (default: no)"
    )
    volumes.add_argument(
        "--patch-slices", type=int, default=VolumeConfig.patch_slices, help="depth of 3D patches (default: 8)"
    )


def data_config_from_args(args: argparse.Namespace, *, channels: int = 3) -> DataConfig:
    return DataConfig(
        root=args.data,
        centres=args.centres,
        channels=channels,
        normalisation=args.normalisation,
        resize=args.resize,
        crop=CropConfig(size=args.crop_size, foreground_probability=args.foreground_probability),
        augment=AugmentConfig.preset(args.augment),
        split=SplitConfig(
            seed=args.seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            label_fraction=args.label_fraction,
            group_patterns=dict(args.group_pattern),
        ),
        volume=VolumeConfig(spacing=args.volume_spacing, patch_slices=args.patch_slices),
    )


def model_and_channels(args: argparse.Namespace) -> tuple[str, int]:
    """The model and input channels: as given, else chosen from the volumes' spacing (2.5D or 3D), else 2D."""
    plan = plan_for_dataset(args.data, args.centres)
    if plan is not None and args.model is None:
        logger.info("volumes: %s", plan.describe())
    model = args.model or (plan.model if plan is not None else "unet")
    three_d = plan is not None and ModelConfig(name=model).spatial_dims == 3
    return model, args.channels or (1 if three_d else 3)


def add_section_arguments(
    group: argparse._ArgumentGroup, section: FlatSection, aliases: Mapping[str, str] | None = None
) -> None:
    """A flag per field of ``section``'s config, named as its run-config key (``--flips/--no-flips`` for a
    boolean); flags not given keep the config's defaults. ``aliases``: key -> another flag it answers to."""
    defaults = section.flatten(section.cls())
    hints = section.hints()
    for key, name in section.keys().items():
        flags = [f"--{key}", *([f"--{aliases[key]}"] if aliases and key in aliases else [])]
        help_text = f"{HELP.get(key, name.replace('_', ' '))} (default: {defaults[key]})"
        kwargs: dict[str, Any] = {"dest": _dest(section, key), "default": argparse.SUPPRESS, "help": help_text}
        if hints[name] is bool:
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            group.add_argument(*flags, metavar=key.split("-")[-1].upper(), **kwargs)


def section_from_args(args: argparse.Namespace, section: FlatSection) -> Any:
    """``section``'s config from the flags given (the same coercion and checks as a run config's keys)."""
    given = {key: getattr(args, _dest(section, key)) for key in section.keys() if hasattr(args, _dest(section, key))}
    return section.build(given)


def _dest(section: FlatSection, key: str) -> str:
    return f"{section.attribute}:{key}"


def add_semi_supervised_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Mean Teacher (semi-supervised: uses images without masks too)")
    group.add_argument("--mean-teacher", action="store_true", help="train with an EMA teacher and consistency loss")
    group.add_argument(
        "--perturb-inputs",
        action="store_true",
        help="without --mean-teacher: train on the Mean Teacher student's perturbed inputs (--noise-std, --flips, "
        "--student-jitter), for a fair comparison with Mean Teacher",
    )
    add_section_arguments(group, TEACHER)


def add_privacy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "differential privacy (DP-SGD: Poisson batches drawn from OS entropy, not --seed; a resumed run "
        "draws new batches and ends at the same epsilon; the unit is one image, one volume, or one subject; "
        "see docs/privacy.md)"
    )
    group.add_argument("--dp-epsilon", type=float, default=None, help="privacy budget epsilon (enables DP-SGD)")
    group.add_argument("--dp-delta", type=float, default=None, help="delta (default: min(1e-5, 1/(10 n)))")
    group.add_argument("--max-grad-norm", type=float, default=1.0, help="per-unit clipping bound (default: 1.0)")
    group.add_argument(
        "--privacy-unit",
        choices=UNITS,
        default="image",
        help="what epsilon protects: one image, or one subject with all its images (--group-pattern; "
        "CHASE_DB1's two eyes per child are known) (default: image)",
    )


def mean_teacher_from_args(args: argparse.Namespace) -> MeanTeacherConfig | None:
    return section_from_args(args, TEACHER) if args.mean_teacher else None


def privacy_from_args(args: argparse.Namespace, *, planned_rounds: int = 1) -> PrivacyConfig | None:
    if args.dp_epsilon is None:
        return None
    return PrivacyConfig(
        epsilon=args.dp_epsilon,
        delta=args.dp_delta,
        max_grad_norm=args.max_grad_norm,
        planned_rounds=planned_rounds,
        unit=args.privacy_unit,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="pooled training on one or more centres")
    add_data_arguments(parser)
    group = parser.add_argument_group("model and optimisation")
    group.add_argument(
        "--model",
        default=None,
        choices=available_models(),
        help="default: unet, or for volumes chosen from their spacing (unet on 2.5D stacks, unet3d)",
    )
    group.add_argument(
        "--model-option",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="model option, e.g. widths=[16,32,64,128] or encoder_name=resnet18 (repeatable)",
    )
    group.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights, e.g. a public prior from `fedseg prior` (same model, "
        "channels and options); a resumed run continues from its own weights",
    )
    group.add_argument("--steps", type=positive_int, default=2000)
    group.add_argument("--batch-size", type=positive_int, default=8)
    add_section_arguments(group, OPTIM, aliases={"lr-schedule": "schedule"})
    add_section_arguments(group, LOSS)
    add_semi_supervised_arguments(parser)
    add_privacy_arguments(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, required=True, help="run folder")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_device(run)
    run.add_argument("--workers", type=int, default=1, help="data-loading worker processes (default: 1)")
    run.add_argument("--checkpoint-every", type=positive_int, default=250)
    run.add_argument("--val-every", type=int, default=250, help="validate every N steps (0: never)")
    run.add_argument("--log-every", type=positive_int, default=10)
    run.add_argument("--tile-size", type=int, default=None, help="validation tile size (default: 4 x the crop size)")
    run.add_argument(
        "--tracking",
        default=DEFAULT_TRACKING,
        help="tensorboard (event files in RUN/tensorboard, the default), mlflow:URI (and an MLflow run), or none",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    model, channels = model_and_channels(args)
    data = data_config_from_args(args, channels=channels)
    return TrainConfig(
        data=data,
        out=args.out,
        model=ModelConfig(name=model, in_channels=data.channels, options=dict(args.model_option)),
        loss=section_from_args(args, LOSS),
        optim=section_from_args(args, OPTIM),
        tiling=TilingConfig(tile_size=args.tile_size or default_tile_size(args.crop_size)),
        mean_teacher=mean_teacher_from_args(args),
        perturb_inputs=supervised_perturbation(
            section_from_args(args, TEACHER), mean_teacher=args.mean_teacher, perturb_inputs=args.perturb_inputs
        ),
        privacy=privacy_from_args(args),
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        workers=args.workers,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        log_every=args.log_every,
        init_checkpoint=args.init,
    )


def run(args: argparse.Namespace) -> int:
    TrackingConfig.parse(args.tracking)  # a bad value fails before the data is read
    result = train(config_from_args(args), resume=args.resume, tracking=args.tracking)
    best = f", best validation Dice {result.best_val_dice:.4f}" if result.best_val_dice is not None else ""
    spent = f", epsilon spent {result.epsilon:.3f}" if result.epsilon is not None else ""
    print(f"trained {result.steps} steps{best}{spent}; checkpoint: {result.last_checkpoint}")
    return 0
