"""fedseg's Conv2d per-sample gradients against per-sample autograd, in both memory layouts."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from fedseg.models import ModelConfig, build_model
from fedseg.privacy.grad_samplers import conv2d_grad_sample

LAYERS = {
    "3x3": dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    "depthwise": dict(in_channels=6, out_channels=6, kernel_size=3, padding=1, groups=6),
    "dilated depthwise": dict(in_channels=6, out_channels=6, kernel_size=3, padding=2, dilation=2, groups=6),
    "grouped strided": dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, stride=2, groups=2),
    "pointwise": dict(in_channels=4, out_channels=6, kernel_size=1),
    "pointwise no bias": dict(in_channels=4, out_channels=6, kernel_size=1, bias=False),
}


def per_sample_autograd(layer: nn.Conv2d, inputs: torch.Tensor, grad_out: torch.Tensor) -> dict[str, torch.Tensor]:
    grads: dict[str, list[torch.Tensor]] = {name: [] for name, _ in layer.named_parameters()}
    for index in range(inputs.shape[0]):
        layer.zero_grad()
        (layer(inputs[index : index + 1]) * grad_out[index : index + 1]).sum().backward()
        for name, parameter in layer.named_parameters():
            grads[name].append(parameter.grad.clone())
    return {name: torch.stack(values) for name, values in grads.items()}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_conv2d_per_sample_gradients_match_autograd(name: str, channels_last: bool) -> None:
    torch.manual_seed(0)
    layer = nn.Conv2d(**LAYERS[name])
    inputs = torch.randn(3, layer.in_channels, 9, 11)
    grad_out = torch.randn_like(layer(inputs))
    expected = per_sample_autograd(layer, inputs, grad_out)
    if channels_last:
        inputs, grad_out = (t.contiguous(memory_format=torch.channels_last) for t in (inputs, grad_out))
    got = conv2d_grad_sample(layer, [inputs], grad_out)
    for parameter_name, parameter in layer.named_parameters():
        torch.testing.assert_close(got[parameter], expected[parameter_name], rtol=1e-4, atol=1e-4)


def test_a_whole_channels_last_unet_gets_exact_per_sample_gradients() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(options={"widths": [4, 8, 16], "aspp_rates": [1, 2]})).to(
        memory_format=torch.channels_last
    )
    inputs = torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    wrapped(inputs).square().sum().backward()
    for index in range(3):
        reference = build_model(ModelConfig(options={"widths": [4, 8, 16], "aspp_rates": [1, 2]}))
        reference.load_state_dict(model.state_dict())
        reference(inputs[index : index + 1].contiguous()).square().sum().backward()
        for (name, parameter), (_, expected) in zip(model.named_parameters(), reference.named_parameters()):
            torch.testing.assert_close(parameter.grad_sample[index], expected.grad, rtol=1e-3, atol=1e-4, msg=name)
