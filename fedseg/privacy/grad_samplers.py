"""Per-sample gradients of 2-D convolutions for DP-SGD, correct in any memory layout and fast on the CPU.

Opacus computes a convolution's per-sample weight gradients by unfolding the input (im2col)
and multiplying; on channels-last inputs its ``unfold2d`` returns a wrongly ordered tensor, so
the per-sample gradients (and with them clipping, and the privacy guarantee) are wrong, and
im2col copies nine times the input at full resolution. Here, registered for ``nn.Conv2d`` in
place of Opacus' sampler:

- 1 x 1 convolutions (stride 1, one group): a batched matrix product of the output gradient with
  the input, ``einsum("bohw,bihw->boi")``, no copy of the input at all;
- every other convolution: one convolution weight-gradient over the whole batch with the batch
  folded into the groups (``groups = batch x groups``; Rochette et al., 2019), which oneDNN runs
  as a single grouped kernel.

``tests/privacy/test_grad_samplers.py`` checks both against per-sample autograd, in both layouts.
"""

from __future__ import annotations

import torch
from opacus.grad_sample.utils import register_grad_sampler
from torch import nn


def _is_pointwise(layer: nn.Conv2d) -> bool:
    return (
        layer.kernel_size == (1, 1)
        and layer.stride == (1, 1)
        and layer.padding in ((0, 0), "valid")
        and layer.groups == 1
    )


def _pointwise(activations: torch.Tensor, backprops: torch.Tensor) -> torch.Tensor:
    batch, channels_in, channels_out = activations.shape[0], activations.shape[1], backprops.shape[1]
    inputs = activations.reshape(batch, channels_in, -1)
    grads = backprops.reshape(batch, channels_out, -1)
    return torch.bmm(grads, inputs.transpose(1, 2))


def _grouped(layer: nn.Conv2d, activations: torch.Tensor, backprops: torch.Tensor) -> torch.Tensor:
    batch = activations.shape[0]
    inputs = activations.contiguous().reshape(1, -1, *activations.shape[2:])
    grads = backprops.contiguous().reshape(1, -1, *backprops.shape[2:])
    weight = layer.weight
    if isinstance(layer.padding, str):
        raise ValueError(f"string padding '{layer.padding}' is not supported by fedseg's DP convolution sampler")
    per_sample = torch.nn.grad.conv2d_weight(
        inputs,
        (batch * weight.shape[0], *weight.shape[1:]),
        grads,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=batch * layer.groups,
    )
    return per_sample.reshape(batch, *weight.shape)


@register_grad_sampler(nn.Conv2d)
def conv2d_grad_sample(
    layer: nn.Conv2d, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients ``B x *param.shape`` of a Conv2d's weight (and bias)."""
    if layer.padding_mode != "zeros":
        raise ValueError(f"padding mode '{layer.padding_mode}' is not supported by fedseg's DP convolution sampler")
    inputs = activations[0].to(backprops.dtype)
    result: dict[nn.Parameter, torch.Tensor] = {}
    if layer.weight.requires_grad:
        if inputs.shape[0] == 0:  # as Opacus does for an empty Poisson batch
            result[layer.weight] = torch.zeros_like(layer.weight).unsqueeze(0)
        elif _is_pointwise(layer):
            result[layer.weight] = _pointwise(inputs, backprops).reshape(inputs.shape[0], *layer.weight.shape)
        else:
            result[layer.weight] = _grouped(layer, inputs, backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        result[layer.bias] = backprops.sum(dim=(2, 3))
    return result
