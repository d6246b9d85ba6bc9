import pytest
import torch

from models import MODELS, build_model, dendrite_slots


@pytest.mark.parametrize("name, expected", [("resnet18", 11_220_132), ("resnet34", 21_328_292)])
def test_parameter_counts_match_the_cifar_resnets(name, expected):
    assert sum(p.numel() for p in build_model(name).parameters()) == expected


@pytest.mark.parametrize("name", list(MODELS))
def test_output_is_one_logit_per_class(name):
    model = build_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_default_dendrite_modules_exist_in_resnet18():
    import config
    slots = dendrite_slots(build_model("resnet18"))
    assert all(name in slots for name in config.dendrite_modules.split(","))
    assert "stem" in slots and "layer2.0.shortcut" in slots
