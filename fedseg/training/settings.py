"""The training settings that are flat keys: in a federation's run config and as ``fedseg train`` flags.

Each ``FlatSection`` exposes every field of one config dataclass (optimiser, loss, Mean Teacher) under
its kebab-case name, so a field added to the dataclass is a run-config key and a CLI flag without
more code (declare it in pyproject.toml's ``[tool.flwr.app.config]``: Flower refuses undeclared keys,
and a test checks that the two agree). ``HELP`` describes them for the CLI.
"""

from __future__ import annotations

from fedseg.configuration import FlatSection
from fedseg.losses import LossConfig
from fedseg.training.config import OptimConfig
from fedseg.training.mean_teacher import MeanTeacherConfig, PerturbationConfig

OPTIM = FlatSection("optim", OptimConfig, {"schedule": "lr-schedule"})
LOSS = FlatSection("loss", LossConfig, {"gamma": "focal-gamma", "alpha": "focal-alpha"})
TEACHER = FlatSection("teacher", MeanTeacherConfig, {"rampup_steps": "consistency-rampup"})
SECTIONS = (OPTIM, LOSS, TEACHER)

HELP = {
    "lr": "learning rate (AdamW)",
    "lr-schedule": "learning-rate schedule over the run's steps: onecycle, cosine or constant",
    "weight-decay": "AdamW weight decay",
    "warmup-fraction": "share of the schedule's steps spent warming up (onecycle)",
    "focal-weight": "weight of the focal term of the supervised loss",
    "dice-weight": "weight of the Dice term of the supervised loss",
    "focal-gamma": "focal loss gamma",
    "focal-alpha": "focal loss weight of the foreground class (0: unweighted)",
    "ema-decay": "the teacher's EMA decay (about 1/(1 - decay) steps of memory)",
    "consistency-weight": "weight of the consistency loss after its ramp-up",
    "consistency-rampup": "steps of the sigmoid ramp-up of the consistency weight",
    "noise-std": "Gaussian noise added to the student's and the teacher's inputs",
    "flips": "random flips of the student's and the teacher's inputs (undone on the logits)",
    "student-jitter": "the student's random per-channel gain and offset (another scanner's look)",
    "unlabelled-ratio": "unlabelled images per labelled one in a batch (and with dp-balance, under DP)",
    "teacher-follows": "where a site's teacher starts each federated round: reset (the global model), site "
    "(its own teacher of the last round) or blend",
    "round-blend": "with teacher-follows = blend: the weight of the site's teacher against the global model",
    "dp-balance": "under DP, sample labelled and unlabelled images at separate Poisson rates "
    "(1 : unlabelled-ratio in an expected batch; accounted at the larger rate)",
}


def supervised_perturbation(
    teacher: MeanTeacherConfig, *, mean_teacher: bool, perturb_inputs: bool
) -> PerturbationConfig | None:
    """What ``perturb-inputs`` means: without Mean Teacher, the student trains on the inputs the Mean Teacher
    student would see (``noise-std``, ``flips``, ``student-jitter``), so that the two compare fairly. With
    Mean Teacher on, the student's perturbation is its own already (None here)."""
    return teacher.student_perturbation if perturb_inputs and not mean_teacher else None
