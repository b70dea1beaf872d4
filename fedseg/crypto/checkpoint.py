"""Turning the server's encrypted global model (``.he``) into a plaintext checkpoint, at a site."""

from __future__ import annotations

from pathlib import Path

from fedseg.crypto import transport
from fedseg.crypto.keys import HEKeyError, load_context
from fedseg.crypto.packing import CiphertextRejected, Layout, decrypt_average
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint
from fedseg.models.state import load_model_state, model_state


def decrypt_checkpoint(encrypted: str | Path, site_context: str | Path, out: str | Path) -> Path:
    """Decrypt ``encrypted`` (checkpoints/last.he or best.he) with the site's context into a .pt checkpoint.

    Refuses, writing nothing, a damaged or foreign ``.he`` file or key file, weights that decrypt
    to non-finite or absurd values, and an ``out`` that is one of the inputs.
    """
    encrypted, out = Path(encrypted), Path(out)
    if out.resolve() in (encrypted.resolve(), Path(site_context).resolve()):
        raise HEKeyError(f"{out}: is one of the inputs; write the checkpoint to a new file (e.g. last.pt)")
    he = load_context(site_context, expect="site")
    try:
        vector, meta = transport.read_file(encrypted)
    except CiphertextRejected as error:
        raise HEKeyError(str(error)) from None
    try:
        model_config = ModelConfig(**meta.pop("model"))
        preprocessing = Preprocessing(**meta.pop("preprocessing"))
        model = build_model(model_config)
        weights = decrypt_average(vector, he, Layout.of(model_state(model)))
    except CiphertextRejected as error:
        raise HEKeyError(f"{encrypted}: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise HEKeyError(f"{encrypted}: its model description is unusable ({type(error).__name__}: {error})") from None
    load_model_state(model, weights)
    return save_checkpoint(out, model=model, model_config=model_config, preprocessing=preprocessing, meta=meta)
