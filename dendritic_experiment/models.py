"""The networks: CIFAR ResNets and CompactNet at any width, and which of their layers can get dendrites
(docs/method.md, "The dendrites").

    python dendritic_experiment/models.py    # every model, layer by layer, with its parameter count
"""
import os
import re
import sys

import torch
import torch.nn.functional as F
from torch import nn

if __name__ == "__main__" and not __package__:  # run as a file: import the package, not its files one by one
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dendritic_experiment.utils import split_list  # noqa: E402


class ConvBN(nn.Sequential):
    """A bias-free convolution followed by its BatchNorm: one unit that can get dendrites, because
    perforatedai needs each norm layer wrapped together with the layer it follows (dendrites.py wraps)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=dilation * (kernel_size // 2),
                      dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, width, stride):
        super().__init__()
        self.conv1 = ConvBN(in_channels, width, stride=stride)
        self.conv2 = ConvBN(width, width)
        needs_projection = stride != 1 or in_channels != width
        self.shortcut = ConvBN(in_channels, width, 1, stride) if needs_projection else nn.Identity()

    def forward(self, x):
        out = F.relu(self.conv1(x))
        return F.relu(self.conv2(out) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4): the ResNet-50 block."""
    expansion = 4

    def __init__(self, in_channels, width, stride):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = ConvBN(in_channels, width, 1)
        self.conv2 = ConvBN(width, width, stride=stride)
        self.conv3 = ConvBN(width, out_channels, 1)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = ConvBN(in_channels, out_channels, 1, stride) if needs_projection else nn.Identity()

    def forward(self, x):
        out = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(self.conv3(out) + self.shortcut(x))


# A ResNet's blocks: units a dendrite can copy whole, as the library authors' ResNet example places them.
RESIDUAL_BLOCKS = (BasicBlock, Bottleneck)


class ResNet(nn.Module):
    """He et al. 2016 ResNet adapted to 32x32 inputs: 3x3 stride-1 stem, no max-pool."""

    def __init__(self, blocks_per_stage, num_classes=100, widths=(64, 128, 256, 512), block=BasicBlock):
        super().__init__()
        self.stem = ConvBN(3, widths[0])
        stages, in_channels = [], widths[0]
        for stage, (width, blocks) in enumerate(zip(widths, blocks_per_stage)):
            strides = [1 if stage == 0 else 2] + [1] * (blocks - 1)
            layers = []
            for stride in strides:
                layers.append(block(in_channels, width, stride))
                in_channels = width * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Separable(nn.Module):
    """Depthwise 3x3 (optionally dilated or strided) then pointwise 1x1: a fraction of a full conv's cost."""

    def __init__(self, in_channels, out_channels, stride=1, dilation=1):
        super().__init__()
        self.depthwise = ConvBN(in_channels, in_channels, stride=stride, dilation=dilation, groups=in_channels)
        self.pointwise = ConvBN(in_channels, out_channels, 1)

    def forward(self, x):
        return self.pointwise(F.relu(self.depthwise(x)))


class Residual(nn.Module):
    """relu(x + conv(x)) around a shape-keeping conv unit."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return F.relu(x + self.conv(x))


class CompactNet(nn.Module):
    """About 100K parameters for CIFAR-10: regular, dilated and depthwise-separable convolutions
    with residual connections, global average pooling and a 1x1 convolution head."""

    def __init__(self, num_classes=10, width=32):
        super().__init__()
        self.stem = ConvBN(3, width)
        self.block1 = Residual(ConvBN(width, width))
        self.down1 = Separable(width, 2 * width, stride=2)
        self.block2 = Residual(ConvBN(2 * width, 2 * width, dilation=2))  # wider view at no extra cost
        self.down2 = Separable(2 * width, 4 * width, stride=2)
        self.block3 = Residual(Separable(4 * width, 4 * width))
        self.block4 = Residual(Separable(4 * width, 4 * width, dilation=2))
        self.head = nn.Conv2d(4 * width, num_classes, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.block2(F.relu(self.down1(self.block1(x))))
        x = self.block4(self.block3(F.relu(self.down2(x))))
        return torch.flatten(self.head(F.adaptive_avg_pool2d(x, 1)), 1)


# Model name -> constructor(num_classes, width), width multiplying every channel count (channels()).
# Run names are these, plus "_dendritic", "_continued" or a width multiple (model_and_width).
MODELS = {
    "resnet18": lambda num_classes, width: ResNet([2, 2, 2, 2], num_classes, channels(RESNET_WIDTHS, width)),
    "resnet34": lambda num_classes, width: ResNet([3, 4, 6, 3], num_classes, channels(RESNET_WIDTHS, width)),
    "resnet50": lambda num_classes, width: ResNet([3, 4, 6, 3], num_classes, channels(RESNET_WIDTHS, width),
                                                  block=Bottleneck),
    "compactnet": lambda num_classes, width: CompactNet(num_classes, *channels((32,), width)),
}
RESNET_WIDTHS = (64, 128, 256, 512)  # channels of the four stages (a bottleneck's output: 4x)

# What dendrite_modules = "auto" means for each model: a few mid-network conv+bn pairs, so that
# even the maximum number of dendrites keeps the model well below the next larger one.
AUTO_DENDRITE_MODULES = {
    "resnet18": "layer3.0.conv2,layer3.1.conv2",
    "resnet34": "layer3.0.conv2,layer3.1.conv2",
    "resnet50": "layer3.0.conv2,layer3.1.conv2",
    "compactnet": "block3.conv.pointwise,block4.conv.pointwise",
}


def channels(widths, width):
    """The standard channel counts times width, rounded; a layer left without a channel is refused."""
    scaled = tuple(round(channel * width) for channel in widths)
    if min(scaled) < 1:
        raise ValueError(f"width {width:g} leaves a layer with no channel: use at least {0.5 / min(widths):g}")
    return scaled


WIDTH_MARK = re.compile(r"^(?P<model>[a-z0-9]+)_w(?P<multiple>\d+(\.\d+)?)$")


def model_and_width(name):
    """(model, width multiple) of a model name: 'resnet18' -> ('resnet18', 1.0), 'resnet18_w1.25' ->
    ('resnet18', 1.25), every channel times 1.25 on top of --width: a baseline of the width frontier
    (frontier.py). None when the name is neither a model nor a model at a positive multiple."""
    if name in MODELS:
        return name, 1.0
    match = WIDTH_MARK.match(name)
    if match and match["model"] in MODELS and float(match["multiple"]) > 0:
        return match["model"], float(match["multiple"])
    return None


def build_model(name, num_classes=100, width=1.0):
    """The model a name means (a width multiple in the name multiplies width)."""
    model, multiple = model_and_width(name)
    return MODELS[model](num_classes, width * multiple)


def dendrite_modules_of(model_name, setting):
    """The module names a dendrite_modules setting means for this model ("auto": AUTO_DENDRITE_MODULES)."""
    return split_list(AUTO_DENDRITE_MODULES.get(model_name, "") if setting == "auto" else setting)


def dendrite_slots(model):
    """Names of the modules that can get dendrites, in model order: every conv+bn pair, linear layer
    (the classifier, fc) and residual block (layer3.0: the dendrite copies the whole block)."""
    return [name for name, module in model.named_modules() if isinstance(module, (ConvBN, nn.Linear) + RESIDUAL_BLOCKS)]


def layer_table(model, input_shape=(1, 3, 32, 32)):
    """[(name, output shape, parameters)] for every conv+bn pair and every other layer with weights."""
    rows, hooks = [], []
    units = [(name, module) for name, module in model.named_modules()
             if isinstance(module, (ConvBN, nn.Linear)) or (isinstance(module, nn.Conv2d) and "." not in name)]
    for name, module in units:
        params = sum(p.numel() for p in module.parameters())
        hooks.append(module.register_forward_hook(lambda module, inputs, output, name=name, params=params:
                                                  rows.append((name, tuple(output.shape[1:]), params))))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(input_shape))
    for hook in hooks:
        hook.remove()
    return rows


def print_summary(name, num_classes):
    model = build_model(name, num_classes)
    print(f"\n{name} ({num_classes} classes)")
    print(f"  {'layer':28s} {'output':>16s} {'parameters':>12s}")
    for layer, shape, params in layer_table(model):
        print(f"  {layer:28s} {'x'.join(map(str, shape)):>16s} {params:>12,d}")
    print(f"  {'total':28s} {'':>16s} {sum(p.numel() for p in model.parameters()):>12,d}")


if __name__ == "__main__":
    for model_name in MODELS:
        print_summary(model_name, 10 if model_name == "compactnet" else 100)
