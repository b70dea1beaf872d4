"""The wire format of the global model and of updates, as Flower records (used by sites and server).

A model travels either in plaintext (``weights``: an ArrayRecord of the state dict) or
encrypted (``encrypted``: an ArrayRecord of ciphertext bytes, and ``encrypted-header``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Union

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedseg.crypto import transport
from fedseg.crypto.packing import EncryptedVector
from fedseg.federation import protocol

ENCRYPTED, ENCRYPTED_HEADER = "encrypted", "encrypted-header"
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
    if ENCRYPTED in content:
        arrays = {name: array.numpy() for name, array in content[ENCRYPTED].items()}
        return transport.from_parts(arrays, dict(content[ENCRYPTED_HEADER]))
    return content[protocol.WEIGHTS].to_torch_state_dict()
