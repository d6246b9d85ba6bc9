import subprocess
import sys

import pytest
import torch

from dendritic_experiment.models import (
    AUTO_DENDRITE_MODULES,
    MODELS,
    build_model,
    dendrite_modules_of,
    dendrite_slots,
    layer_table,
)

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
