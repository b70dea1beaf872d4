"""Everything a site may send, and how each field is protected: one table for the code, the docs and the tests.

A site builds its replies through ``releasable``, which keeps only the fields listed here (a new
metric does not leave a site until someone lists it), and drops, under DP, every field that is
neither the protected update, nor public, nor released through the accounted Gaussian mechanism
(``gaussian_release``). ``docs/privacy.md`` shows ``markdown_table()``; a test checks that the
two agree and that every field of every message of a real simulation is in the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

import numpy as np

from fedseg.metrics import SegmentationCounts
from fedseg.privacy.accountant import SiteAccountant


class Handling(str, Enum):
    """How a field leaves a site."""

    UPDATE = "the model update"
    PUBLIC = "public"
    GAUSSIAN = "Gaussian mechanism, accounted"
    BY_DESIGN = "exact, by design"
    EXACT = "exact"
    PROTOCOL = "key material, independent of the images"
    DROPPED = "not sent"

    @property
    def sent(self) -> bool:
        return self is not Handling.DROPPED


@dataclass(frozen=True)
class Field:
    """Fields ``keys`` of record ``record`` in a site's reply to ``message`` (``role``: train, heldout or any)."""

    message: str
    role: str
    record: str
    keys: tuple[str, ...]
    plain: Handling
    dp: Handling
    why: str

    def matches(self, message: str, role: str, record: str, key: str) -> bool:
        return (
            self.message == message
            and self.role in (role, "any")
            and self.record == record
            and (key in self.keys or "*" in self.keys)
        )


H = Handling
LEDGER_KEYS = (
    "site", "round", "kind", "epsilon", "delta", "epsilon_budget", "sampling_rate", "noise_multiplier",
    "steps", "step", "releases", "unit", "accountant",
)  # fmt: skip
CLAIM_KEYS = ("run-id", "round", "site", "examples", "payload-digest", "participants", "kind", "signature")
COUNT_KEYS = tuple(f.name for f in fields(SegmentationCounts))  # every sum and count of an evaluation
FIELDS: tuple[Field, ...] = (
    Field("describe", "any", "site", ("site", "centre", "role"), H.PUBLIC, H.PUBLIC,
          "the site map of the run config"),
    Field("describe", "any", "site", ("labelled", "unlabelled", "evaluation"), H.PUBLIC, H.PUBLIC,
          "cohort sizes, treated as public: the ledger's sampling rate q = batch / n reveals n anyway"),
    Field("train", "train", "site", ("site", "centre"), H.PUBLIC, H.PUBLIC, "the site map"),
    Field("train", "train", "weights", ("*",), H.EXACT, H.UPDATE,
          "DP-SGD: per-unit clipping and Gaussian noise; every step in the ledger (kind 'update')"),
    Field("train", "train", "encrypted", ("*",), H.UPDATE, H.UPDATE,
          "the update (times num-examples) as CKKS ciphertexts, and the model's integer buffers (counters)"),
    Field("train", "train", "encrypted-header",
          ("length", "weight", "layout_hash", "fingerprint", "digest", "chunks", "fraction_bits", "range_bits"),
          H.PUBLIC, H.PUBLIC, "ciphertext bookkeeping: sizes, key fingerprint, hash, fixed-point format, weight = the "
          "site's share of the round's examples"),
    Field("train", "train", "claim", CLAIM_KEYS, H.PUBLIC, H.PUBLIC,
          "what the site signs with its node key: run, round, site, num-examples, the payload's hash, the round's "
          "participants"),
    Field("train", "train", "metrics", ("num-examples", "examples", "labelled", "unlabelled"), H.PUBLIC, H.PUBLIC,
          "cohort sizes (FedAvg's weight), see describe"),
    Field("train", "train", "metrics",
          ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "epsilon_budget", "projected_epsilon"),
          H.PUBLIC, H.PUBLIC, "the accountant's values: set by the run config and the cohort size"),
    Field("train", "train", "metrics", ("he_encrypt_seconds", "he_decrypt_seconds", "he_bytes_up"), H.PUBLIC,
          H.PUBLIC, "encryption cost of a fixed-size vector: depends on the model, not on the images"),
    Field("train", "train", "metrics", ("supervised_loss", "consistency_loss"), H.EXACT, H.DROPPED,
          "a membership-inference signal that no mechanism protects; under DP the site logs it locally"),
    Field("train", "train", "metrics", ("seconds",), H.EXACT, H.DROPPED,
          "training time grows with the secret Poisson batch sizes; under DP the site logs it locally"),
    Field("train", "train", "ledger", LEDGER_KEYS, H.PUBLIC, H.PUBLIC,
          "the site's ledger row: the mechanism's parameters and the cumulative epsilon"),
    Field("train", "train", "refused", ("reason",), H.PUBLIC, H.PUBLIC,
          "budget exhausted: the refusal, with the accountant's values, instead of an update"),
    Field("unmask", "train", "seeds", ("*",), H.PROTOCOL, H.PROTOCOL,
          "masked HE: the site's self-mask seed of the round and its pairwise seeds with sites missing from the sum; "
          "they remove masks from the sum, never from one update"),
    Field("unmask", "train", "claim", CLAIM_KEYS, H.PUBLIC, H.PUBLIC, "the signed claim over the revealed seeds"),
    Field("evaluate", "any", "site", ("site", "centre", "role"), H.PUBLIC, H.PUBLIC, "the site map"),
    Field("evaluate", "train", "counts", ("n_images",), H.EXACT, H.PUBLIC,
          "the number of validation units (images or subjects): a cohort size"),
    Field("evaluate", "train", "counts", ("dice_sum",), H.EXACT, H.GAUSSIAN,
          "sum over validation units of their Dice (sensitivity 1) plus Gaussian noise of std "
          "dp-validation-noise; one ledger row (kind 'validation') per release; 0 keeps it at the site"),
    Field("evaluate", "train", "counts", tuple(k for k in COUNT_KEYS if k not in ("n_images", "dice_sum")), H.EXACT,
          H.DROPPED, "exact pixel counts and other sums of the validation images: never sent under DP"),
    Field("evaluate", "train", "ledger", LEDGER_KEYS, H.PUBLIC, H.PUBLIC, "the ledger row of the validation release"),
    Field("evaluate", "heldout", "counts", COUNT_KEYS, H.BY_DESIGN, H.BY_DESIGN,
          "a held-out site exists to score the model: aggregate sums and counts over all its images, not DP; "
          "it answers at most max-evaluations distinct models (node config, default 100)"),
)  # fmt: skip


def handling(message: str, role: str, record: str, key: str, *, dp: bool) -> Handling | None:
    """How ``record.key`` of a reply to ``message`` leaves a site of ``role`` (None: not listed, never sent)."""
    for entry in FIELDS:
        if entry.matches(message, role, record, key):
            return entry.dp if dp else entry.plain
    return None


def releasable(message: str, role: str, record: str, values: Mapping[str, Any], *, dp: bool) -> dict[str, Any]:
    """The fields of ``values`` that may leave the site: listed, and sent under this setting."""
    kept = {}
    for key, value in values.items():
        rule = handling(message, role, record, key, dp=dp)
        if rule is not None and rule.sent:
            kept[key] = value
    return kept


def gaussian_release(values: Sequence[float], accountant: SiteAccountant, *, upper: float) -> float:
    """``sum(values)`` (each clipped to [0, 1]: sensitivity 1 under adding or removing a unit) plus Gaussian
    noise of standard deviation ``accountant.release_noise``, recorded in ``accountant`` first.

    The noise comes from OS entropy. The result is clipped to [0, ``upper``] (post-processing).
    The caller persists the accountant before the value leaves the site.
    """
    total = float(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0).sum())
    accountant.record_release()
    rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
    return float(np.clip(total + rng.normal(0.0, accountant.release_noise), 0.0, upper))


def markdown_table() -> str:
    """The table of ``docs/privacy.md``."""
    lines = [
        "| reply to | site | field | without DP | with DP | why |",
        "|---|---|---|---|---|---|",
    ]
    for entry in FIELDS:
        keys = ", ".join("every entry" if key == "*" else f"`{key}`" for key in entry.keys)
        lines.append(
            f"| {entry.message} | {entry.role} | `{entry.record}`: {keys} | {entry.plain.value} | "
            f"{entry.dp.value} | {entry.why} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
