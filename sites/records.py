"""The wire format, as Flower records (used by sites and server): models, signed updates, round tickets.

A model travels either in plaintext (``weights``: an ArrayRecord of the state dict) or
encrypted (``encrypted``: an ArrayRecord of ciphertext bytes, and ``encrypted-header``). A
site's update adds ``claim`` (what the site signs) and its ``signature``; a train or unmask
request carries the round's ``ticket``. Anything malformed raises ``UpdateRejected``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Union

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedseg.crypto import transport
from fedseg.crypto.packing import CiphertextRejected, EncryptedVector
from fedseg.crypto.protection import ProtectedUpdate, RevealedSeeds, RoundTicket
from fedseg.crypto.signing import UpdateClaim, UpdateRejected
from fedseg.federation import protocol

ENCRYPTED, ENCRYPTED_HEADER = "encrypted", "encrypted-header"
CLAIM, TICKET, SEEDS = "claim", "ticket", "seeds"
Model = Union[Mapping[str, torch.Tensor], EncryptedVector]


def model_records(model: Model) -> dict[str, ArrayRecord | ConfigRecord]:
    if isinstance(model, EncryptedVector):
        arrays, header = transport.to_parts(model)
        return {
            ENCRYPTED: ArrayRecord.from_array_dict({k: Array(v) for k, v in arrays.items()}),
            ENCRYPTED_HEADER: ConfigRecord(header),
        }
    return {protocol.WEIGHTS: ArrayRecord(OrderedDict(model))}


def model_from(content: RecordDict) -> Model:
    try:
        if ENCRYPTED in content:
            arrays = {name: array.numpy() for name, array in content[ENCRYPTED].items()}
            return transport.from_parts(arrays, dict(content[ENCRYPTED_HEADER]))
        return content[protocol.WEIGHTS].to_torch_state_dict()
    except CiphertextRejected as error:
        raise UpdateRejected(f"unusable encrypted model: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise UpdateRejected(f"message holds no usable model ({type(error).__name__}: {error})") from None


def _claim_record(claim: UpdateClaim, signature: bytes | None) -> ConfigRecord:
    values: dict[str, Any] = {
        "run-id": claim.run_id,
        "round": claim.round,
        "site": claim.site,
        "examples": claim.examples,
        "payload-digest": claim.payload_digest,
        "participants": ",".join(claim.participants),
        "kind": claim.kind,
    }
    if signature is not None:
        values["signature"] = signature
    return ConfigRecord(values)


def _claim_from(record: Mapping[str, Any]) -> tuple[UpdateClaim, bytes | None]:
    try:
        participants = tuple(p for p in str(record["participants"]).split(",") if p)
        claim = UpdateClaim(
            str(record["run-id"]),
            int(record["round"]),
            str(record["site"]),
            int(record["examples"]),
            str(record["payload-digest"]),
            participants,
            str(record["kind"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UpdateRejected(f"update claim is malformed ({type(error).__name__}: {error})") from None
    signature = record.get("signature")
    return claim, bytes(signature) if isinstance(signature, bytes) else None


def update_records(update: ProtectedUpdate) -> dict[str, ArrayRecord | ConfigRecord]:
    return {**model_records(update.payload), CLAIM: _claim_record(update.claim, update.signature)}


def update_from(content: RecordDict) -> ProtectedUpdate:
    if CLAIM not in content:
        raise UpdateRejected("update carries no claim (an older fedseg site?)")
    claim, signature = _claim_from(dict(content[CLAIM]))
    return ProtectedUpdate(model_from(content), claim, signature)


def ticket_record(ticket: RoundTicket) -> ConfigRecord:
    return ConfigRecord(
        {
            "run-id": ticket.run_id,
            "round": ticket.round,
            "participants": ",".join(ticket.participants),
            "weight-total": ticket.weight_total,
            "max-sites": ticket.max_sites,
        }
    )


def ticket_from(content: RecordDict) -> RoundTicket:
    record = dict(content[TICKET])
    return RoundTicket(
        str(record["run-id"]),
        int(record["round"]),
        tuple(p for p in str(record["participants"]).split(",") if p),
        int(record["weight-total"]),
        int(record["max-sites"]),
    )


def seeds_records(revealed: RevealedSeeds) -> dict[str, ConfigRecord]:
    return {SEEDS: ConfigRecord(dict(revealed.seeds)), CLAIM: _claim_record(revealed.claim, revealed.signature)}


def seeds_from(content: RecordDict) -> RevealedSeeds:
    if SEEDS not in content or CLAIM not in content:
        raise UpdateRejected("unmask reply carries no seeds or claim")
    claim, signature = _claim_from(dict(content[CLAIM]))
    seeds = {str(k): bytes(v) for k, v in dict(content[SEEDS]).items() if isinstance(v, bytes)}
    return RevealedSeeds(seeds, claim, signature)
