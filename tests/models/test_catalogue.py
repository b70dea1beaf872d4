from __future__ import annotations

import pytest

from fedseg.cli import main
from fedseg.models.catalogue import describe


def test_describe_counts_parameters_times_the_cpu_and_checks_dp() -> None:
    entry = describe("unet", size=64, repeats=1)
    assert entry.parameters == 1_032_197 and entry.dp_compatible and entry.grad_sample_mode == "hooks"
    assert entry.cpu_ms_per_megapixel is not None and entry.cpu_ms_per_megapixel > 0


def test_models_command_lists_the_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--no-timing", "unet", "doubleunet", "smp-unet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["unet", "1.03M"] and "yes (hooks)" in lines[1]
    assert lines[2].split()[:2] == ["doubleunet", "29.29M"]  # the paper's 29.3 M parameters
    assert "yes (hooks)" in lines[3]  # smp-unet's default resnet34 encoder is made out-of-place
    assert main(["models", "--no-timing", "no-such-model"]) == 2
