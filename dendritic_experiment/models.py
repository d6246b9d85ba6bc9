"""CIFAR ResNets and CompactNet, and the one place that knows about perforatedai.

    python dendritic_experiment/models.py    # every model, layer by layer, with its parameter count

Every convolution sits with its BatchNorm in a `ConvBN` pair. That pair is the unit that can
get dendrites: perforatedai needs each norm layer wrapped together with the layer it follows.
"""
import contextlib
import os
import re
import shutil
import sys
import warnings

import torch
from torch import nn
import torch.nn.functional as F


class ConvBN(nn.Sequential):
    """A bias-free convolution followed by its BatchNorm."""

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


# Model name -> constructor(num_classes). Run names are these, plus "_dendritic" or "_continued".
MODELS = {
    "resnet18": lambda num_classes: ResNet([2, 2, 2, 2], num_classes),
    "resnet34": lambda num_classes: ResNet([3, 4, 6, 3], num_classes),
    "resnet50": lambda num_classes: ResNet([3, 4, 6, 3], num_classes, block=Bottleneck),
    "compactnet": lambda num_classes: CompactNet(num_classes),
}

# What dendrite_modules = "auto" means for each model: a few mid-network conv+bn pairs, so that
# even the maximum number of dendrites keeps the model well below the next larger one.
AUTO_DENDRITE_MODULES = {
    "resnet18": "layer3.0.conv2,layer3.1.conv2",
    "resnet34": "layer3.0.conv2,layer3.1.conv2",
    "resnet50": "layer3.0.conv2,layer3.1.conv2",
    "compactnet": "block3.conv.pointwise,block4.conv.pointwise",
}


def build_model(name, num_classes=100):
    return MODELS[name](num_classes)


def dendrite_modules_of(model_name, setting):
    """The conv+bn names a dendrite_modules setting means for this model."""
    return split_list(AUTO_DENDRITE_MODULES.get(model_name, "") if setting == "auto" else setting)


def dendrite_slots(model):
    """Names of the conv+bn pairs that can get dendrites, in model order."""
    return [name for name, module in model.named_modules() if isinstance(module, ConvBN)]


# ---------------------------------------------------------------------------------------------
# Dendrites. Everything that imports perforatedai is below; the baseline path never meets it.
# Facts relied on (perforatedai 3.2.9): ../shared/PAI_NOTES.md.
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def working_directory(path):
    """perforatedai writes to ./<save_name>/ of the current directory: point that at the run."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


class Dendrites:
    """The perforatedai tracker behind the few calls a training loop needs.

    fixed mode: the tracker never decides a switch itself (DOING_NO_SWITCH); we force one at the
    end of every dendrite_epochs cycle, so cycles have exactly that length. history mode: the
    tracker switches when the validation score has not improved for history_epochs epochs.
    Either way the tracker decides whether a dendrite helped, rolls back to the best model on
    validation, and says when training is complete.
    """

    SAVE_NAME = "PAI"  # the library's folder inside the run folder

    def __init__(self, model, module_names, settings, run_dir, device, resuming=False):
        from perforatedai import globals_perforatedai as GPA
        from perforatedai import utils_perforatedai as UPA

        self.GPA, self.UPA, self.run_dir, self.settings = GPA, UPA, run_dir, settings
        self.fixed_cycles = settings.switch_mode == "fixed"
        for name in module_names:
            conv, bn = model.get_submodule(name)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, GPA.PAISequential([conv, bn]))

        pc = GPA.pc
        pc.set_configuration_confirmed(True)  # else an interactive setup screen opens
        pc.set_testing_dendrite_capacity(False)  # else a 3-dendrite test mode overrides everything
        pc.set_unwrapped_modules_confirmed(True)  # the other conv+bn pairs stay plain on purpose
        pc.set_checked_skipped_modules(True)
        pc.set_weight_decay_accepted(True)
        pc.set_silent(True)
        pc.set_device(device)
        pc.set_module_names_to_perforate(["PAISequential"])  # only the pairs wrapped above
        pc.set_switch_mode(pc.DOING_NO_SWITCH if self.fixed_cycles else pc.DOING_HISTORY)
        pc.set_n_epochs_to_switch(settings.history_epochs)
        pc.set_max_dendrites(settings.max_dendrites)
        pc.set_max_dendrite_tries(1)  # a dendrite that does not help ends the run
        pc.set_find_best_lr(False)  # our cycles use one known schedule, not an LR search
        pc.set_dont_give_up_unless_learning_rate_lowered(False)
        pc.set_test_saves(False)  # skip the library's large intermediate checkpoints
        # The tracker steps the scheduler at a switch, also at a warm start's switch before any
        # optimizer step: PyTorch's warning about that order is expected here.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))

        os.makedirs(run_dir, exist_ok=True)
        if not resuming:
            # A leftover <save_name>_config.json would silently override the settings above.
            shutil.rmtree(os.path.join(run_dir, self.SAVE_NAME), ignore_errors=True)
        with working_directory(run_dir), contextlib.redirect_stdout(sys.stderr):
            self.model = UPA.perforate_model(
                # Drawing the graph at every score costs about 1.1 s per epoch (measured, ResNet-18 on a
                # CPU machine), more than a GPU epoch should take: draw_graphs draws it once, at the end.
                model, save_name=self.SAVE_NAME, making_graphs=False, maximizing_score=True
            )
        self.tracker = GPA.pai_tracker

    def setup_optimizer(self, optimizer_class, optimizer_kwargs, scheduler_class, scheduler_kwargs):
        """A fresh optimizer and scheduler for the current architecture (after every restructure)."""
        self.tracker.set_optimizer(optimizer_class)
        self.tracker.set_scheduler(scheduler_class)
        kwargs = dict(optimizer_kwargs, params=self.model.parameters())
        return self.tracker.setup_optimizer(self.model, kwargs, scheduler_kwargs)

    def end_epoch(self, val_accuracy, train_accuracy, epochs_in_cycle, cycle_length=0, force_switch=False):
        """Report one epoch. Returns (model, restructured, complete); always use that model.
        In fixed mode the cycle ends (a switch) after cycle_length epochs."""
        force_switch = force_switch or (self.fixed_cycles and epochs_in_cycle >= cycle_length)
        self.tracker.add_extra_score(train_accuracy, "Train")
        with working_directory(self.run_dir), contextlib.redirect_stdout(sys.stderr):
            model, restructured, complete = self.tracker.add_validation_score(
                val_accuracy, self.model, force_switch=force_switch
            )
        self.model = model
        if complete:  # where the library draws it itself (mid-run its records can be between states)
            self.draw_graphs()
        return model, bool(restructured), bool(complete)

    def draw_graphs(self):
        """The library's growth graph (<run_dir>/PAI/PAI.png) and its CSVs, from its records: at the end,
        every epoch up to the kept model's (completing, the tracker reloads that model's records)."""
        self.tracker.making_graphs = True
        try:
            with working_directory(self.run_dir), contextlib.redirect_stdout(sys.stderr):
                self.tracker.save_graphs()
        finally:
            self.tracker.making_graphs = False

    def state(self):
        """Model weights (dendrites included) and the tracker's whole history, for a checkpoint."""
        return {"model": self.model.state_dict(), "tracker": self.tracker.to_string()}

    def restore(self, state):
        """Undo state(): grows the saved dendrites into this freshly converted model."""
        self.model = self.UPA.load_net_from_dict(self.model, state["model"])
        self.tracker.reset_module_vector(self.model, True)
        self.tracker.from_string(state["tracker"])
        return self.model

    def report_baseline(self, val_accuracy, train_accuracy):
        """A finished baseline's scores as the whole first phase; the tracker adds the first dendrite.

        The library does not count a first validation score as the best to beat (it wants more
        than initial_history_after_switches = 0 epochs since a switch). A warm start reports the
        baseline only once, so for that one call the setting is -1: otherwise the first dendrite
        would be kept even when it made validation worse. It goes back to 0 at once, because
        setup_optimizer steps the new scheduler by it.
        """
        self.GPA.pc.set_initial_history_after_switches(-1)
        try:
            return self.end_epoch(val_accuracy, train_accuracy, 0, force_switch=True)
        finally:
            self.GPA.pc.set_initial_history_after_switches(0)

    @property
    def count(self):
        """Dendrites in the current model."""
        return int(self.tracker.member_vars["num_dendrites_added"])

    def parameters(self):
        """Parameter count without the hidden copies the library keeps to grow new dendrites."""
        return int(self.UPA.count_params(self.model))


def to_device(model, device, memory_format=torch.preserve_format):
    """model.to(device, memory_format), except perforatedai's 0-dim `this_node_index` buffers, which
    stay on the host: its modules test `dim == self.this_node_index` in every forward, and on a GPU
    each test would wait for the device (16 waits per training step with one dendrite on two modules)."""
    indices = {module: index.cpu() for module in model.modules()
               if (index := module._buffers.get("this_node_index")) is not None and index.dim() == 0}
    model = model.to(device, memory_format=memory_format)
    for module, index in indices.items():
        module._buffers["this_node_index"] = index
    return model


def split_list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def layer_table(model, input_shape=(1, 3, 32, 32)):
    """[(name, output shape, parameters)] for every conv+bn pair and every other layer with weights."""
    rows, hooks = [], []
    units = [(name, module) for name, module in model.named_modules()
             if isinstance(module, (ConvBN, nn.Linear)) or (isinstance(module, nn.Conv2d) and "." not in name)]
    for name, module in units:
        params = sum(p.numel() for p in module.parameters())
        hooks.append(module.register_forward_hook(
            lambda module, inputs, output, name=name, params=params: rows.append((name, tuple(output.shape[1:]), params))))
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
