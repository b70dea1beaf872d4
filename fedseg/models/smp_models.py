"""segmentation-models-pytorch architectures, converted for DP-SGD.

Each is registered as ``smp-<arch>`` with the architecture's own keyword options (read from
its signature) as the options, ``encoder_weights`` fixed to None (nothing is downloaded),
BatchNorm replaced by GroupNorm and in-place operations removed. Inputs of any size are
padded to a multiple of 32 and the output cropped back.
"""

from __future__ import annotations

import inspect
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from fedseg.models.blocks import pad_to_multiple
from fedseg.models.registry import register_model

ARCHITECTURES = {
    "smp-unet": smp.Unet,
    "smp-unetplusplus": smp.UnetPlusPlus,
    "smp-deeplabv3plus": smp.DeepLabV3Plus,
    "smp-fpn": smp.FPN,
    "smp-linknet": smp.Linknet,
    "smp-manet": smp.MAnet,
}
_NOT_OPTIONS = {"self", "encoder_weights", "in_channels", "classes", "activation", "aux_params", "kwargs"}
# Encoders whose blocks are all out of place after fedseg.models.dp_compat: Opacus hooks work.
HOOK_SAFE_ENCODER_PREFIXES = ("resnet", "resnext", "mobilenet_v2", "vgg")
SIZE_MULTIPLE = 32


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def architecture_options(architecture: type[nn.Module]) -> dict[str, Any]:
    """The architecture's keyword options and their defaults, from its signature."""
    parameters = inspect.signature(architecture.__init__).parameters
    return {
        name: _json_value(p.default)
        for name, p in parameters.items()
        if name not in _NOT_OPTIONS and p.default is not inspect.Parameter.empty
    }


class SmpSegmenter(nn.Module):
    """An smp model that accepts any input size (padding to a multiple of 32)."""

    size_multiple = SIZE_MULTIPLE

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        return self.net(x)[..., :height, :width]


def grad_sample_mode_for(options: dict[str, Any]) -> str:
    encoder = str(options.get("encoder_name", ""))
    return "hooks" if encoder.startswith(HOOK_SAFE_ENCODER_PREFIXES) else "ew"


def _register(name: str, architecture: type[nn.Module]) -> None:
    def build(*, in_channels: int, classes: int, **options: Any) -> nn.Module:
        net = architecture(encoder_weights=None, in_channels=in_channels, classes=classes, **options)
        return SmpSegmenter(net)

    register_model(name, default_options=architecture_options(architecture), grad_sample_mode="auto")(build)


for _name, _architecture in ARCHITECTURES.items():
    _register(_name, _architecture)
