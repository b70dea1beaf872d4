"""Make any zoo model acceptable to Opacus: GroupNorm for BatchNorm, no in-place operations.

Opacus' backward hooks break on tensors modified in place after a hooked module, such as
``nn.ReLU(inplace=True)`` or torchvision's ``out += identity`` in ResNet blocks. This module
turns those off: ``inplace`` attributes are set to False and known residual blocks get an
out-of-place ``forward`` by switching their class to a subclass that adds out of place.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
DEFAULT_NORM_GROUPS = 32


class OutOfPlaceBasicBlock(tv_resnet.BasicBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class OutOfPlaceBottleneck(tv_resnet.Bottleneck):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_OUT_OF_PLACE: dict[type[nn.Module], type[nn.Module]] = {
    tv_resnet.BasicBlock: OutOfPlaceBasicBlock,
    tv_resnet.Bottleneck: OutOfPlaceBottleneck,
}


def _group_norm_for(module: nn.modules.batchnorm._NormBase, groups: int) -> nn.GroupNorm:
    channels = int(module.num_features)
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=float(module.eps), affine=True)


def replace_batch_norm(model: nn.Module, *, groups: int = DEFAULT_NORM_GROUPS) -> nn.Module:
    """Replace every BatchNorm (in place in the module tree) by a GroupNorm over the same channels."""
    for name, child in list(model.named_children()):
        if isinstance(child, _BATCH_NORMS):
            setattr(model, name, _group_norm_for(child, groups))
        else:
            replace_batch_norm(child, groups=groups)
    return model


def disable_inplace(model: nn.Module) -> nn.Module:
    """Set ``inplace = False`` on every module that has the flag and fix known in-place residual blocks."""
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            setattr(module, "inplace", False)  # noqa: B010
        replacement = _OUT_OF_PLACE.get(type(module))
        if replacement is not None:
            module.__class__ = replacement  # type: ignore[assignment]
    return model


def make_dp_compatible(model: nn.Module, *, groups: int = DEFAULT_NORM_GROUPS) -> nn.Module:
    return disable_inplace(replace_batch_norm(model, groups=groups))
