"""A finished run's model as plain PyTorch (plain_model.load(run_dir)), its dendrites rebuilt without perforatedai:
loading never imports the library, so a dendritic model runs where it is not installed, and torch.export can export
it (export.py)."""
import copy
import os

import torch
from torch import nn

from dendritic_experiment.data import DATASETS
from dendritic_experiment.dendrites import ACTIVATIONS  # plain torch functions: imports no library
from dendritic_experiment.models import build_model, dendrite_modules_of, model_and_width
from dendritic_experiment.utils import ExperimentError, read_json


class DendriticModule(nn.Module):
    """A module with its dendrites, computing exactly what perforatedai 3.2.9's wrapped module computes (read
    from its modules_perforatedai.py: PAINeuronModule.forward, PAIDendriteModule.forward and set_mode; checked
    by tests/test_export.py: the same logits to 1e-5, bit for bit on a CPU). With k dendrites, channel c on
    dimension 1 of every output:
        a_0 = act(D_0(x)),   a_i = act(D_i(x) + sum_{j<i} W_i[j, c] * a_j)      (i = 1 .. k-1)
        y   = M(x) + sum_i S[i, c] * a_i
    M: main, D_i: dendrite i (a copy of M), act: the run's dendrite_activation (the library's process-wide
    pai_forward_function), W_i: earlier[i - 1], S: scales. BatchNorms inside M and each D_i keep their own
    running statistics (buffers of the same names)."""

    def __init__(self, main, dendrites, channels, activation):
        super().__init__()
        self.main = main
        self.dendrites = nn.ModuleList(copy.deepcopy(main) for _ in range(dendrites))
        self.activation_name, self.activation = activation, ACTIVATIONS[activation]
        # scales[i]: dendrite i's output scale per channel (the library's last dendrites_to_top)
        self.scales = nn.Parameter(torch.zeros(dendrites, channels)) if dendrites else None
        # earlier[i - 1][j]: dendrite i's weight per channel on dendrite j < i (dendrites_to_dendrites.<i>)
        self.earlier = nn.ParameterList(torch.zeros(i, channels) for i in range(1, dendrites))

    def forward(self, x):
        out = self.main(x)
        activated = []
        for i, dendrite in enumerate(self.dendrites):
            z = dendrite(x)
            for j, earlier_output in enumerate(activated):
                z = z + per_channel(self.earlier[i - 1][j], z) * earlier_output
            activated.append(self.activation(z))
        for i, dendrite_output in enumerate(activated):  # added after all of them, in order, as the library does
            out = out + dendrite_output * per_channel(self.scales[i], dendrite_output)
        return out

    def extra_repr(self):
        return f"activation={self.activation_name}"


def per_channel(values, like):
    """values (channels) shaped to multiply a batch like `like` along dimension 1 (N x C, N x C x H x W)."""
    return values.view(1, -1, *([1] * (like.dim() - 2)))


def dendritic_model(model_name, num_classes, width, module_names, dendrites, activation="tanh"):
    """models.build_model's network with each of module_names (conv+bn pairs, linear layers, residual
    blocks) a DendriticModule with `dendrites` fresh dendrites whose scales are zero."""
    model = build_model(model_name, num_classes, width)
    channels = output_channels(model, module_names)
    for name in module_names:
        module = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        # Its parts as dendrites.py hands them to the library: a conv+bn pair's two layers, else the module whole.
        parts = list(module) if isinstance(module, nn.Sequential) else [module]
        wrapped = DendriticModule(nn.Sequential(*parts), dendrites, channels[name], activation)
        setattr(model.get_submodule(parent_name), child, wrapped)
    return model


def output_channels(model, module_names):
    """{name: channels of its output} for each named module, from one forward pass of an empty image."""
    channels, hooks = {}, []
    for name in module_names:
        hooks.append(model.get_submodule(name).register_forward_hook(
            lambda module, inputs, output, name=name: channels.__setitem__(name, output.shape[1])))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, 32, 32, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return channels


def dendritic_params(model_name, num_classes, width, module_names, dendrites):
    """The parameters of a model with `dendrites` dendrites on each of module_names that run in a
    forward pass: what a dendritic run with that many dendrites reports. Counted on the meta device
    (no memory, no arithmetic); a module name the model does not have raises AttributeError."""
    with torch.device("meta"):
        model = dendritic_model(model_name, num_classes, width, module_names, dendrites)
    return sum(parameter.numel() for parameter in model.parameters())


# --- A finished run's folder: result.json and model.pt ---

def read_result(run_dir):
    """result.json of a finished run, checked for what rebuilding its model needs."""
    if not os.path.isdir(run_dir):
        raise ExperimentError(f"{run_dir} is not a folder: give a finished run's folder, such as results/resnet18")
    path = os.path.join(run_dir, "result.json")
    result = read_json(path)
    if result is None:
        raise ExperimentError(f"{path} is missing or unreadable: give the folder of a finished run "
                              "(main.py writes result.json when the run ends)")
    settings = result.get("settings") if isinstance(result, dict) else None
    dendritic = isinstance(settings, dict) and result.get("dendritic")
    needed = ("dendrite_modules", "dendrite_activation") if dendritic else ()
    if (not isinstance(settings, dict) or model_and_width(str(result.get("model"))) is None
            or result.get("dataset") not in DATASETS or not result.get("classes")
            or any(key not in settings for key in needed)
            or (dendritic and not isinstance(result.get("dendrites"), int))):
        raise ExperimentError(f"{path} does not describe a finished run of this project (model, dataset, classes "
                              "or settings missing or unknown): run main.py again to rewrite it")
    return result


def load(run_dir, result=None):
    """The model of a finished run (any kind: baseline, width variant, control, dendritic) in eval
    mode on the CPU, its dendrites rebuilt in plain PyTorch. result: its read_result, if read already."""
    result = result or read_result(run_dir)
    path = os.path.join(run_dir, "model.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExperimentError(f"{path} is missing: the run has not finished; run main.py again to finish it") from None
    except Exception as error:
        raise ExperimentError(f"{path} is not a readable checkpoint ({type(error).__name__}); "
                              "train the run again (main.py --retrain) or restore the file") from None
    settings = result["settings"]
    try:
        if result["dendritic"]:
            if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
                raise ValueError("not a dendritic checkpoint")
            module_names = dendrite_modules_of(result["model"], settings["dendrite_modules"])
            model = dendritic_model(result["model"], len(result["classes"]), settings.get("width", 1.0), module_names,
                                    result["dendrites"], settings["dendrite_activation"])
            model.load_state_dict(from_library(state["model"], model, module_names))
        else:
            model = build_model(result["model"], len(result["classes"]), settings.get("width", 1.0))
            model.load_state_dict(state)
    except Exception:  # wrong keys or shapes, modules the model does not have, or not a state_dict at all
        raise ExperimentError(f"{path} does not fit the {result['model']} with {len(result['classes'])} classes that "
                              "result.json names: it is from another run or model; put the run's own model.pt back "
                              "or train the run again (main.py --retrain)") from None
    return model.eval()


def from_library(library_state, model, module_names):
    """The state_dict of the plain model `model` taken from a perforatedai model's state_dict; a missing key
    raises KeyError, a library model with more dendrites than `model` ValueError. Only what runs is taken,
    not: the hidden dendrite_module.parent_module copy, every dendrites_to_top.<i> but the last (each switch
    appends a longer copy; the forward reads the newest) and dendrite_module.dendrites_to_candidates.* (the
    scaffold of the next dendrite's W). (UPA.count_params leaves out the parent copy only.)"""
    dendrites = {name: len(model.get_submodule(name).dendrites) for name in module_names}
    if any(f"{name}.dendrites_to_top.{count}" in library_state for name, count in dendrites.items()):
        raise ValueError("the library's model has more dendrites than the run records")
    return {key: library_state[library_key(key, dendrites)] for key in model.state_dict()}


def library_key(key, dendrites):
    """The library's name of a plain model's state_dict key. dendrites: {wrapped module name: dendrites}."""
    for name, count in dendrites.items():
        if not key.startswith(name + "."):
            continue
        part, _, rest = key[len(name) + 1:].partition(".")
        if part == "main":
            return f"{name}.main_module.model.{rest}"
        if part == "dendrites":
            index, _, rest = rest.partition(".")
            return f"{name}.dendrite_module.layers.{index}.model.{rest}"
        if part == "scales":
            return f"{name}.dendrites_to_top.{count - 1}"
        if part == "earlier":  # earlier.<i - 1> is dendrite i's (the library's entry 0 is empty)
            return f"{name}.dendrite_module.dendrites_to_dendrites.{int(rest) + 1}"
        raise KeyError(key)
    return key
