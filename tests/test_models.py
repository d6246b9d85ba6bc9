import re
import subprocess
import sys

import pytest
import torch

from dendritic_experiment.models import (AUTO_DENDRITE_MODULES, MODELS, build_model, dendrite_modules_of,
                                         dendrite_slots, layer_table, model_and_width)

from helpers import PACKAGE


@pytest.mark.parametrize("name, expected", [
    ("resnet18", 11_220_132), ("resnet34", 21_328_292), ("resnet50", 23_705_252)])
def test_parameter_counts_match_the_cifar_resnets(name, expected):
    assert sum(p.numel() for p in build_model(name).parameters()) == expected


def test_compactnet_stays_under_200k_parameters():
    assert sum(p.numel() for p in build_model("compactnet", 10).parameters()) < 200_000


@pytest.mark.parametrize("name", list(MODELS))
def test_output_is_one_logit_per_class(name):
    model = build_model(name, 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", list(MODELS))
def test_auto_dendrite_modules_exist_in_each_model(name):
    chosen = dendrite_modules_of(name, "auto")
    assert chosen and set(chosen) <= set(dendrite_slots(build_model(name)))
    assert dendrite_modules_of(name, "stem, layer1.0.conv1") == ["stem", "layer1.0.conv1"]
    assert set(AUTO_DENDRITE_MODULES) == set(MODELS)


def test_layer_table_adds_up_to_the_model():
    model = build_model("compactnet", 10)
    rows = layer_table(model)
    assert rows[0] == ("stem", (32, 32, 32), 928) and rows[-1][:2] == ("head", (10, 1, 1))
    assert sum(params for _, _, params in rows) == sum(p.numel() for p in model.parameters())


def test_models_py_prints_every_model_with_its_total():
    out = subprocess.run([sys.executable, f"{PACKAGE}/models.py"], capture_output=True, text=True, check=True).stdout
    for name in MODELS:
        assert f"\n{name} (" in out
    assert "layer3.0.conv2" in out and "23,705,252" in out


def test_width_scales_every_layers_channels_and_the_parameters_follow():
    full, half = build_model("resnet18"), build_model("resnet18", width=0.5)
    full_layers, half_layers = ({name: shape for name, shape, _ in layer_table(m)} for m in (full, half))
    for name, module in half.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            twin = full.get_submodule(name)
            assert module.out_channels * 2 == twin.out_channels and (name == "stem.0" or module.in_channels * 2 == twin.in_channels)
    assert half_layers.keys() == full_layers.keys()
    assert all(half_layers[name][0] * 2 == full_layers[name][0] for name in full_layers if name != "fc")
    full_params, half_params = (sum(p.numel() for p in m.parameters()) for m in (full, half))
    assert 0.24 < half_params / full_params < 0.26  # channels x channels: a quarter, less the biases' and fc's share


@pytest.mark.parametrize("width, message", [(0.001, "leaves a layer with no channel: use at least 0.0078125"),
                                            (0.0, "above 0 and at most 16")])
def test_a_width_that_leaves_a_layer_without_channels_is_refused(width, message, tmp_path, capsys):
    from dendritic_experiment import main

    assert main.cli(["--width", str(width), "--results-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: --width {width} is not allowed") and message in error


def test_a_width_variant_has_the_parameters_of_a_hand_count():
    """resnet18_w2 at --width 0.125: ResNet-18 at a quarter of the channels, 16/32/64/128, counted by hand
    (a 3x3 conv: in x out x 9, a 1x1 projection: in x out, each BatchNorm: 2 x out):
    stem 3*16*9 + 32 = 464; layer1 2 x 2 x (16*16*9 + 32) = 9,344; layer2 (16*32*9 + 64) + (32*32*9 + 64)
    + (16*32 + 64) + 2 x (32*32*9 + 64) = 33,088; layer3 likewise 57,728 + 73,984 = 131,712; layer4
    230,144 + 295,424 = 525,568; fc 128*100 + 100 = 12,900. Total 713,076."""
    assert sum(p.numel() for p in build_model("resnet18_w2", 100, width=0.125).parameters()) == 713_076
    assert model_and_width("resnet18_w1.25") == ("resnet18", 1.25) and model_and_width("compactnet") == ("compactnet", 1.0)
    for name in ("resnet18_w", "resnet18_w0", "resnet18_wide", "resnet99_w1.5", "resnet18_w1.5_dendritic"):
        assert model_and_width(name) is None, name


@pytest.mark.parametrize("flags, message", [
    (["--experiments", "resnet18_w1.25_dendritic"], "a width variant is a baseline of the width frontier only; use resnet18_dendritic"),
    (["--experiments", "resnet18_wide"], "or a baseline at another width such as resnet18_w1.25"),
    (["--dendrite-modules", "layer3.0,layer3.0.conv2"], "layer3.0.conv2 is inside layer3.0: name the block or its layers"),
    (["--dendrite-modules", "layer3"], "residual blocks of resnet18: stem, layer1.0, layer1.0.conv1"),
    # x 1.001 rounds every channel count back to resnet18's (512 x 0.125 x 1.001 = 64.06): one size twice
    (["--width", "0.125", "--experiments", "resnet18,resnet18_w1.001,resnet18_w2"],
     "resnet18 and resnet18_w1.001 have the same parameter count at --width 0.125, so they draw no width frontier"),
])
def test_a_width_variant_with_dendrites_or_modules_inside_others_are_refused(flags, message):
    from dendritic_experiment.settings import parse_settings
    from dendritic_experiment.utils import ExperimentError

    with pytest.raises(ExperimentError, match=re.escape(message)):
        parse_settings(flags)


def test_residual_blocks_are_dendrite_slots():
    slots = dendrite_slots(build_model("resnet18"))
    assert {"layer3.0", "layer3.1", "layer4.1"} <= set(slots) and "layer3" not in slots
    assert "layer3.0" in dendrite_slots(build_model("resnet50"))
