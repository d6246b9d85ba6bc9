"""Multiply-accumulates per image, against counts done by hand."""
import pytest
import torch
from torch import nn

from dendritic_experiment import costs, models


class Tiny(nn.Module):
    """On a 3 x 8 x 8 image: a 3x3 conv, a block of a strided 1x1 conv and a depthwise 3x3, a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
        self.block = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


# By hand: output elements x inputs per output.
STEM = 4 * 8 * 8 * (3 * 3 * 3)        # 6,912
POINTWISE = 8 * 4 * 4 * (4 * 1 * 1)   # 512 (stride 2: 4 x 4 outputs)
DEPTHWISE = 8 * 4 * 4 * (1 * 3 * 3)   # 1,152 (one input channel per group)
FC = 5 * 8                            # 40


def test_a_models_macs_are_the_hand_count():
    layers = costs.layer_macs(Tiny(), image_shape=(3, 8, 8))
    assert layers == {"stem.0": STEM, "block.0": POINTWISE, "block.2": DEPTHWISE, "fc": FC}
    assert costs.model_macs(Tiny(), image_shape=(3, 8, 8)) == 8616


def test_each_dendrite_adds_a_copy_of_its_modules_macs():
    layers = costs.layer_macs(Tiny(), image_shape=(3, 8, 8))
    total = STEM + POINTWISE + DEPTHWISE + FC
    assert costs.dendritic_macs(layers, ["stem"], 0) == total
    assert costs.dendritic_macs(layers, ["stem", "fc"], 2) == total + 2 * (STEM + FC)
    assert costs.dendritic_macs(layers, ["block"], 1) == total + POINTWISE + DEPTHWISE  # a whole block
    # a name is a module and what lies under it, not every name it prefixes
    assert costs.dendritic_macs({"layer1.1.conv": 10, "layer1.10.conv": 100}, ["layer1.1"], 1) == 120
    with pytest.raises(ValueError, match="stem.9"):
        costs.dendritic_macs(layers, ["stem.9"], 1)


def test_resnet18_layers_by_hand():
    layers = costs.layer_macs(models.build_model("resnet18"))
    # layer3: 256 channels at 8 x 8; layer3.0 enters with 128 channels at 16 x 16 and strides by 2.
    conv2 = 256 * 8 * 8 * 256 * 9
    assert costs.macs_under(layers, "layer3.0.conv2") == conv2 == 37_748_736
    block = 256 * 8 * 8 * 128 * 9 + conv2 + 256 * 8 * 8 * 128  # conv1, conv2, 1x1 shortcut
    assert costs.macs_under(layers, "layer3.0") == block
    assert costs.macs_under(layers, "layer3.1") == 2 * conv2  # no shortcut conv
    assert layers["stem.0"] == 64 * 32 * 32 * 27 and layers["fc"] == 100 * 512


def test_a_real_dendritic_model_costs_what_the_count_says(new_tracker):
    """perforatedai's own model, counted by the same hooks: its dendrite copies run in the forward pass
    (the hidden parent copy does not), so one dendrite on two conv+bn pairs costs their MACs once more."""
    from helpers import TINY_WIDTH

    plain = costs.layer_macs(models.build_model("resnet18", width=TINY_WIDTH))
    dendrites = new_tracker("--max-dendrites", "2")
    dendrites.setup_optimizer(torch.optim.SGD, dict(lr=0.1), torch.optim.lr_scheduler.LambdaLR,
                              dict(lr_lambda=lambda epoch: 1.0))
    dendrites.learn_shapes(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    # By hand, ResNet-18 at 1/8 width (8, 16, 32, 64 channels at 32, 16, 8, 4 pixels a side): the stem
    # 8 * 32 * 32 * 27 = 221,184; layer1's four 3x3 convs 4 * 8 * 32 * 32 * 8 * 9 = 2,359,296; layers 2-4 each
    # 294,912 (the striding conv) + 3 * 589,824 + 32,768 (the 1x1 shortcut) = 2,097,152; fc 100 * 64 = 6,400.
    resnet18 = 221_184 + 2_359_296 + 3 * 2_097_152 + 6_400
    assert costs.model_macs(dendrites.model) == sum(plain.values()) == resnet18 == 8_878_336
    dendrites.start_from_baseline(50.0, 50.0)
    assert dendrites.dendrite_count == 1
    modules = models.dendrite_modules_of("resnet18", "auto")
    assert costs.model_macs(dendrites.model) == costs.dendritic_macs(plain, modules, 1) == \
        resnet18 + 2 * 32 * 8 * 8 * 32 * 9  # layer3's two 32-channel 3x3 convs at 8 x 8, once more


def test_a_runs_macs_come_from_the_settings_its_result_holds():
    from helpers import TINY_WIDTH

    result = dict(model="resnet18", classes=["a class"] * 100, dendrites=2,
                  settings=dict(width=TINY_WIDTH, dendrite_modules="auto"))
    plain = costs.model_macs(models.build_model("resnet18", 100, TINY_WIDTH))
    # auto: layer3.0.conv2 and layer3.1.conv2, 32 channels 3x3 at 8 x 8 in a ResNet-18 at 1/8 width
    assert costs.run_macs(result) == plain + 2 * 2 * 32 * 8 * 8 * 32 * 9
    assert costs.run_macs(dict(result, dendrites=0)) == plain
    assert costs.run_macs(dict(result, classes=["a class"] * 10)) == plain - 90 * 64 + 2 * 2 * 32 * 8 * 8 * 32 * 9
