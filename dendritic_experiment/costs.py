"""Compute per image: the multiply-accumulates (MACs) of one inference, counted by forward hooks on one image, so
strides, dilation and padding count as they run. Counted: every nn.Conv2d and nn.Linear. Not counted: BatchNorm,
activations, pooling, residual additions and biases (each at most one operation per output element, a few percent of a
ResNet's total). What a dendrite costs: dendritic_macs; what it is: docs/method.md, "The dendrites"."""
import functools

import torch
from torch import nn

from dendritic_experiment.models import build_model, dendrite_modules_of

CIFAR_IMAGE = (3, 32, 32)  # both datasets' images (data.py)


def layer_macs(model, image_shape=CIFAR_IMAGE):
    """{name: MACs for one image} of every Conv2d and Linear in model, in the order they run."""
    counts = {}

    def count(module, inputs, output, name):
        counts[name] = counts.get(name, 0) + macs_of(module, output)

    hooks = [module.register_forward_hook(functools.partial(count, name=name))
             for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()  # BatchNorm's running statistics stay as they are
    try:
        with torch.no_grad():
            model(torch.zeros(1, *image_shape, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return counts


def macs_of(module, output):
    """MACs of one call of a Conv2d or Linear on a batch of one image, from its output."""
    if isinstance(module, nn.Conv2d):
        kernel_area = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * (module.in_channels // module.groups) * kernel_area
    return output.numel() * module.in_features


def model_macs(model, image_shape=CIFAR_IMAGE):
    """MACs of one inference of model on one image (convolutions and linear layers only)."""
    return sum(layer_macs(model, image_shape).values())


def macs_under(layers, module_name):
    """MACs of every counted layer at or under module_name ('layer3.0' holds 'layer3.0.conv1.0', ...)."""
    return sum(macs for name, macs in layers.items() if name == module_name or name.startswith(module_name + "."))


def dendritic_macs(layers, wrapped_modules, dendrites):
    """MACs per image of the plain model (layers: its layer_macs) with `dendrites` dendrites on each of wrapped_modules.
    A perforatedai 3.2.9 dendrite is a copy of its module (a conv+bn pair, fc, a whole block with its shortcut) that
    runs beside it on the same input, so each adds the MACs under that module's name once more; the hidden parent copy a
    wrapped module keeps to grow new dendrites does not run, and the per-channel scaling of a dendrite's output (one
    multiply per output element) is not counted (checked on the library's own model in tests/test_costs.py). A name
    with no layer under it is refused: a typo would cost nothing."""
    wrapped = {name: macs_under(layers, name) for name in wrapped_modules}
    missing = [name for name, macs in wrapped.items() if not macs]
    if missing:
        raise ValueError(f"dendrite module(s) {', '.join(missing)}: no convolution or linear layer under that name")
    return sum(layers.values()) + dendrites * sum(wrapped.values())


def run_macs(result):
    """MACs per image of a finished run, from its result.json: its model, width, classes and the dendrites it kept."""
    settings = result["settings"]
    layers = plain_layer_macs(result["model"], len(result["classes"]), settings["width"])
    if not result.get("dendrites"):
        return sum(layers.values())
    return dendritic_macs(layers, dendrite_modules_of(result["model"], settings["dendrite_modules"]),
                          result["dendrites"])


@functools.lru_cache(maxsize=None)
def plain_layer_macs(model_name, num_classes, width):
    """layer_macs of a model as models.py builds it (every seed of a run shares it: counted once)."""
    return layer_macs(build_model(model_name, num_classes, width))
