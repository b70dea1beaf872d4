from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from fedseg.models import create_model, model_spec
from fedseg.models.dp_compat import OutOfPlaceBasicBlock, make_dp_compatible
from fedseg.models.registry import resolve_options
from fedseg.models.state import clean_state_dict


def test_batch_norm_becomes_group_norm_and_inplace_is_off() -> None:
    model = make_dp_compatible(resnet18(weights=None))
    kinds = {type(m) for m in model.modules()}
    assert nn.GroupNorm in kinds and not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    assert all(not getattr(m, "inplace", False) for m in model.modules())
    assert isinstance(model.layer1[0], OutOfPlaceBasicBlock)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 1000)


def test_out_of_place_block_computes_the_same_function() -> None:
    torch.manual_seed(0)
    reference = resnet18(weights=None).eval()
    converted = make_dp_compatible(resnet18(weights=None)).eval()
    # Same weights except norms: compare one block after copying conv weights and matching norms.
    block_ref, block_new = reference.layer1[0], converted.layer1[0]
    block_ref.bn1, block_ref.bn2 = block_new.bn1, block_new.bn2
    block_ref.conv1.load_state_dict(block_new.conv1.state_dict())
    block_ref.conv2.load_state_dict(block_new.conv2.state_dict())
    x = torch.randn(1, 64, 16, 16)
    assert torch.allclose(block_ref(x.clone()), block_new(x.clone()), atol=1e-6)


def test_unknown_option_names_the_model_and_its_options() -> None:
    with pytest.raises(ValueError, match=r"model 'unet' has no option\(s\) \['depth'\]; its options are: activation"):
        create_model("unet", depth=3)
    with pytest.raises(ValueError, match="unknown model 'vnet2'; available models: .*unet"):
        model_spec("vnet2")
    assert resolve_options("smp-unet", {})["encoder_name"] == "resnet34"


def test_clean_state_dict_strips_opacus_prefixes() -> None:
    state = {"_module.a.weight": torch.ones(1), "_module._module.b": torch.zeros(1), "c": torch.ones(1)}
    assert list(clean_state_dict(state)) == ["a.weight", "b", "c"]
