"""config.py turned into flags and checked settings, and what follows from settings alone: the seeds, the device and
the precision. Nothing here reads data or results; experiment.py turns the settings into a plan of runs."""
import argparse
import importlib.util
import math
import os
import re
import sys
from types import SimpleNamespace

import torch

from dendritic_experiment import config
from dendritic_experiment.data import DATASETS
from dendritic_experiment.dendrites import ACTIVATIONS
from dendritic_experiment.models import MODELS, build_model, dendrite_modules_of, dendrite_slots, model_and_width
from dendritic_experiment.plain_model import dendritic_params
from dendritic_experiment.utils import ExperimentError, split_list

# --- config.py is the single source: every name there is also a --flag ---

SETTING_LINE = re.compile(r"^(\w+) = (.+?)(?:\s+#\s*(.*))?$")  # `name = value  # what it does`


def config_entries():
    """(group, name, default, help) for each setting, in the order config.py lists them."""
    with open(config.__file__) as f:
        source_lines = f.read().splitlines()
    group, entries = "settings", []
    for line in source_lines:
        if line.startswith("# ---"):
            group = line.strip("# -")
        elif match := SETTING_LINE.match(line):
            name, _, comment = match.groups()
            entries.append((group, name, getattr(config, name), comment or ""))
    return entries


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python dendritic_experiment/main.py",
        usage="%(prog)s [--setting VALUE ...]   (every setting of config.py, listed below)",
        description="Train ResNet baselines and a ResNet with perforatedai dendrites on CIFAR-100, "
        "then compare accuracy against parameters in results/. Defaults come from config.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # --seed must not silently mean --seeds
    )
    groups = {}
    for group, name, default, comment in config_entries():
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        flag = "--" + name.replace("_", "-")
        how = dict(action=argparse.BooleanOptionalAction) if isinstance(default, bool) else dict(
            type=type(default), metavar=type(default).__name__.upper())
        groups[group].add_argument(flag, default=default, help=comment, **how)
    return parser


def parse_settings(argv=None):
    """Settings from config.py and flags, checked; --smoke shrinks those no flag gave."""
    argv = sys.argv[1:] if argv is None else argv
    settings = SimpleNamespace(**vars(build_parser().parse_args(argv)))
    if settings.smoke:
        shrink_for_smoke(settings, flags_given(argv))
        settings.results_dir = os.path.join(settings.results_dir, "smoke")  # never replaces real results
    if settings.run_name:
        settings.results_dir = os.path.join(settings.results_dir, settings.run_name)
    check_settings(settings)
    return settings


def flags_given(argv):
    """The names of the settings argv sets itself (whatever config.py's defaults are)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # a setting no flag gave is left out
    return set(vars(parser.parse_args(argv)))


def shrink_for_smoke(settings, given):
    """--smoke: every stage and a real dendrite in under 3 minutes on 2 CPU cores; a setting a flag gave
    stays as given, the others are said on stderr."""
    epochs = settings.epochs if "epochs" in given else 2
    smoke = {"epochs": epochs, "batch_size": 64,
             "warmup_epochs": min(1, epochs - 1),  # one epoch, unless --epochs leaves no room for it
             "dendrite_epochs": settings.dendrite_warmup_epochs + 1,  # one epoch, and one more per warm-up epoch
             "max_dendrites": 1, "switch_mode": "fixed",
             "seeds": settings.seeds.split(",")[0]}  # one seed: a preliminary result
    shrunk = {name: value for name, value in smoke.items() if name not in given}
    vars(settings).update(shrunk)
    if shrunk:
        said = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in shrunk.items())
        print(f"--smoke: {said} (a flag you give is kept)", file=sys.stderr)


# --- Run names and seeds ---

RUN_SUFFIXES = {"_dendritic": "dendritic", "_continued": "control"}  # a run name's ending -> its kind (else: baseline)


def split_run_name(run_name):
    """The one reading of a run's name, into (model, kind): 'resnet18_continued' -> ('resnet18', 'control'),
    'resnet18_w1.25' -> ('resnet18_w1.25', 'baseline'). After the plan a kind is data (experiment.PlannedRun)."""
    for suffix, kind in RUN_SUFFIXES.items():
        if run_name.endswith(suffix):
            return run_name.removesuffix(suffix), kind
    return run_name, "baseline"


def seed_list(settings):
    return [int(seed) for seed in split_list(settings.seeds)]


# --- Checks: an impossible setting is refused before any work, naming it and what is allowed ---

def refuse(settings, name, allowed):
    raise ExperimentError(f"--{name.replace('_', '-')} {getattr(settings, name)!r} is not allowed: {allowed}")


def check_settings(settings):
    s, history = settings, settings.switch_mode == "history"
    cycle = s.history_epochs if history else s.dendrite_epochs  # a dendrite warm-up must leave the network an epoch
    why_cycle = (f": with --switch-mode history a cycle can end after --history-epochs {cycle} epochs, and the network "
                 "must train in it" if history else " (fewer than --dendrite-epochs)")
    checks = [  # (setting, whether its value is allowed, what is allowed): all tested, the first failing one refused
        *((name, getattr(s, name) >= 1, "use a whole number of at least 1")
          for name in ("epochs", "batch_size", "max_dendrites", "dendrite_epochs", "history_epochs")),
        *((name, 0 < getattr(s, name) <= 10, "use a learning rate above 0 and at most 10")
          for name in ("lr", "dendrite_lr")),
        *((name, 0 <= getattr(s, name) < 1, "use a value in [0, 1)")
          for name in ("momentum", "weight_decay", "dendrite_weight_decay", "label_smoothing")),
        ("dendrite_lr_multiplier", 0 <= s.dendrite_lr_multiplier <= 1000,
         "use a value from 0 (dendrites that never learn) to 1000"),
        ("dendrite_init_scale", 0 < s.dendrite_init_scale <= 1000, "use a value above 0 and at most 1000"),
        ("dendrite_activation", s.dendrite_activation in ACTIVATIONS, f"use {', '.join(ACTIVATIONS)}"),
        ("dendrite_min_gain", 0 <= s.dendrite_min_gain < 100, "use accuracy points from 0 to 100"),
        ("dendrite_warmup_epochs", 0 <= s.dendrite_warmup_epochs < cycle, f"use 0 to {cycle - 1}{why_cycle}"),
        ("checkpoint_seconds", s.checkpoint_seconds >= 0, "use 0 (after every epoch) or more seconds"),
        ("warmup_epochs", 0 <= s.warmup_epochs < s.epochs, f"use 0 to {s.epochs - 1} (fewer than --epochs)"),
        ("val_split", 0 < s.val_split < 50000, "hold out between 1 and 49,999 of the 50,000 training images"),
        ("cutout", 0 <= s.cutout <= 32, "use 0 (off) to 32 pixels"),
        ("precision", s.precision in ("auto", "bf16", "fp16", "fp32"), "use auto, bf16, fp16 or fp32"),
        ("switch_mode", s.switch_mode in ("fixed", "history"), "use fixed or history"),
        ("device", valid_device_name(s.device), f"use {DEVICES}"),
        ("dataset", s.dataset in DATASETS, f"use {' or '.join(DATASETS)}"),
        ("parallel_runs", s.parallel_runs >= 0,
         "use 0 (one run after another) or the number of runs to train at once"),
        ("gpus_per_run", 0 < s.gpus_per_run <= 8,
         "use a share of one GPU (such as 0.5) or a number of GPUs up to 8"),
        ("parallel_runs", not s.parallel_runs or installed("ray"),
         "Ray is not installed: pip install ray, or leave --parallel-runs at 0"),
        ("device", not (s.parallel_runs and s.device.startswith("cuda:")),
         "with --parallel-runs Ray gives each run its GPU: use auto or cuda"),
        ("ray_address", not s.ray_address or s.parallel_runs, "it is used only with --parallel-runs 1 or more"),
        ("wandb_project", not s.wandb_project or installed("wandb"),
         "wandb is not installed: pip install wandb, or leave --wandb-project empty"),
        ("run_name", not s.run_name or re.fullmatch(r"[\w.-]+", s.run_name),
         "use letters, digits, '_', '-' or '.' (it names a folder in --results-dir)"),
    ]
    for name, allowed, what_is_allowed in checks:
        if not allowed:
            refuse(settings, name, what_is_allowed)
    check_runs(settings)  # after the single settings it reads (the dataset's classes, the width)


def installed(module):
    return importlib.util.find_spec(module) is not None


def check_runs(settings):
    """The runs, seeds, width and dendrite modules name things that exist and fit together."""
    runs = split_list(settings.experiments)
    parsed = [split_run_name(run) for run in runs]  # (model, kind) of each
    examples = [model + suffix for model in MODELS for suffix in ("", "_dendritic", "_continued")]
    if not runs or any(model_and_width(model) is None for model, _ in parsed):
        refuse(settings, "experiments", f"use a comma list of {', '.join(examples)}, or a baseline at another width "
               "such as resnet18_w1.25 (every channel count x 1.25)")
    for run, (model, kind) in zip(runs, parsed):
        if kind != "baseline" and model not in MODELS:
            refuse(settings, "experiments", f"{run}: a width variant is a baseline of the width frontier only; "
                   f"use {model_and_width(model)[0]}_{kind} (or change --width for the whole experiment)")
    if any(kind == "control" for _, kind in parsed) and not settings.warm_start:
        refuse(settings, "experiments", "a _continued control needs --warm-start (it continues the baseline)")
    if not re.fullmatch(r"\d+(,\d+)*", settings.seeds.replace(" ", "")):
        refuse(settings, "seeds", "use a comma list of whole numbers, such as 0,1,2")
    if not 0 < settings.width <= 16:
        refuse(settings, "width", "use a multiple of the standard networks' channels above 0 and at most 16")
    dendritic_models = {model for model, kind in parsed if kind == "dendritic"}
    sizes = {}  # (family, parameters) -> its first model: two of one size draw no width frontier
    for model_name in sorted({model for model, _ in parsed}):
        try:
            with torch.device("meta"):  # structure and counts only: no memory (ResNet-34 at --width 16: 22 GB)
                model = build_model(model_name, width=settings.width)
        except ValueError as error:
            refuse(settings, "width", str(error))
        same_size = sizes.setdefault((model_and_width(model_name)[0], sum(p.numel() for p in model.parameters())),
                                     model_name)
        if same_size != model_name:
            refuse(settings, "experiments", f"{same_size} and {model_name} have the same parameter count at --width "
                   f"{settings.width:g}, so they draw no width frontier: use width multiples whose channel counts differ")
        if model_name not in dendritic_models:
            continue
        slots = dendrite_slots(model)
        chosen = dendrite_modules_of(model_name, settings.dendrite_modules)
        if not chosen or any(name not in slots for name in chosen):
            refuse(settings, "dendrite_modules", f"use auto or name conv+bn pairs, linear layers or residual blocks "
                   f"of {model_name}: {', '.join(slots)}")
        nested = [(outer, inner) for outer in chosen for inner in chosen if inner.startswith(outer + ".")]
        if nested:
            refuse(settings, "dendrite_modules", f"{nested[0][1]} is inside {nested[0][0]}: name the block or its "
                   "layers, not both")
        check_frontier_reach(settings, runs, model_name, chosen)


WIDTH_STEP = 0.05  # the width multiples named when a width frontier must reach further


def check_frontier_reach(settings, runs, model, chosen):
    """A dendritic run must stay within its width frontier at every dendrite count it may keep (frontier.py
    extrapolates nothing): refused when it could outgrow the widest variant, naming the narrowest that covers it."""
    classes = DATASETS[settings.dataset]["classes"]
    members = {run for run in runs if split_run_name(run)[1] == "baseline" and model_and_width(run)[0] == model}
    members |= {model} if settings.warm_start else set()  # the baseline it starts from is reported with it
    if len(members) < 2:
        return

    def params(name):
        return dendritic_params(name, classes, settings.width, [], 0)

    widest = max(members, key=params)
    reach = dendritic_params(model, classes, settings.width, chosen, settings.max_dendrites)
    if reach <= params(widest):
        return
    step = math.floor(model_and_width(widest)[1] / WIDTH_STEP) + 1
    while params(f"{model}_w{step * WIDTH_STEP:g}") < reach and settings.width * step * WIDTH_STEP <= 16:
        step += 1
    multiple = round(step * WIDTH_STEP, 6)
    refuse(settings, "experiments", f"{model}_dendritic can reach {reach:,} parameters with --max-dendrites "
           f"{settings.max_dendrites}, beyond its widest width variant {widest} ({params(widest):,}), so its seeds "
           f"would lie outside the {model} width frontier: add {model}_w{multiple:g} (the narrowest multiple of "
           f"{WIDTH_STEP:g} that covers it) or lower --max-dendrites")


# --- Device and precision ---

DEVICES = "auto, cpu, mps, cuda or cuda:N"  # what --device accepts (main.py and predict.py)


def valid_device_name(name):
    return name in ("auto", "cpu", "mps") or name.split(":")[0] == "cuda"


def pick_device(name):
    """The device --device names; one main.py would refuse is refused here too (predict.py's flag comes unchecked)."""
    if not valid_device_name(name):
        raise ExperimentError(f"--device {name!r} is not allowed: use {DEVICES}")
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ExperimentError(f"--device {name}: no CUDA device is visible; use --device cpu or auto")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_precision(name, device):
    """auto: bf16 autocast on CUDA, else fp32; on GPUs without native bf16 (before Ampere), where emulated bf16 is
    slow, fp16 with a gradient scaler."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "fp32"
