"""Turning the server's encrypted global model (``.he``) into a plaintext checkpoint, at a site."""

from __future__ import annotations

from pathlib import Path

from fedseg.crypto import transport
from fedseg.crypto.keys import load_context
from fedseg.crypto.packing import Layout, decrypt_average
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint
from fedseg.models.state import load_model_state, model_state


def decrypt_checkpoint(encrypted: str | Path, site_context: str | Path, out: str | Path) -> Path:
    """Decrypt ``encrypted`` (checkpoints/last.he or best.he) with the site's context into a .pt checkpoint."""
    he = load_context(site_context, expect="site")
    vector, meta = transport.from_bytes(Path(encrypted).read_bytes())
    model_config = ModelConfig(**meta.pop("model"))
    preprocessing = Preprocessing(**meta.pop("preprocessing"))
    model = build_model(model_config)
    weights = decrypt_average(vector, he, Layout.of(model_state(model)))
    load_model_state(model, weights)
    return save_checkpoint(out, model=model, model_config=model_config, preprocessing=preprocessing, meta=meta)
