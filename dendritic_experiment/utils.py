"""Settings, data, files and the report: everything main.py and train.py share."""
import argparse
import collections
import csv
import functools
import importlib.util
import io
import json
import math
import os
import pickle
import re
import sys
import tempfile
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import config
from models import MODELS, build_model, dendrite_modules_of, dendrite_slots, split_list


class ExperimentError(Exception):
    """A problem the user can fix: printed as one line, exit status 2, no traceback."""


def run_cli(main, argv=None, interrupted=""):
    """main(argv) with a user's problems as one line and exit status 2 instead of a traceback."""
    try:
        main(argv)
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted:
            print(interrupted, file=sys.stderr)
        return 130
    return 0


# ---------------------------------------------------------------------------------------------
# Settings: config.py is the single source; every name there is also a --flag.
# ---------------------------------------------------------------------------------------------

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
    )
    groups = {}
    for group, name, default, comment in config_entries():
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            groups[group].add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=comment)
        else:
            groups[group].add_argument(flag, type=type(default), default=default, metavar=type(default).__name__.upper(), help=comment)
    return parser


def parse_settings(argv=None):
    """Settings from config.py and flags, checked; --smoke shrinks them."""
    settings = SimpleNamespace(**vars(build_parser().parse_args(argv)))
    if settings.smoke:
        # Small enough for 2 CPU cores in under 3 minutes, still every stage and a real dendrite.
        settings.epochs, settings.batch_size, settings.warmup_epochs = 2, 64, 1
        settings.dendrite_epochs, settings.max_dendrites, settings.switch_mode = 1, 1, "fixed"
        settings.results_dir = os.path.join(settings.results_dir, "smoke")  # never replaces real results
    if settings.run_name:
        settings.results_dir = os.path.join(settings.results_dir, settings.run_name)
    check_settings(settings)
    return settings


RUN_KINDS = ("baseline", "dendritic", "continued")


def model_of(run_name):
    """'resnet18_dendritic' -> ('resnet18', 'dendritic'); 'resnet18' -> ('resnet18', 'baseline')."""
    for kind in RUN_KINDS[1:]:
        if run_name.endswith("_" + kind):
            return run_name.removesuffix("_" + kind), kind
    return run_name, "baseline"


def run_names(settings):
    """--experiments in order, with each warm-started dendritic run's control right after it."""
    names = []
    for run in split_list(settings.experiments):
        names.append(run)
        model, kind = model_of(run)
        control = model + "_continued"
        if kind == "dendritic" and settings.warm_start and settings.control and control not in names:
            names.append(control)
    return list(dict.fromkeys(names))


def seed_list(settings):
    return [int(seed) for seed in split_list(settings.seeds)]


def check_settings(settings):
    """Refuse an impossible setting before any work, naming the setting and what is allowed."""
    def refuse(name, allowed):
        raise ExperimentError(f"--{name.replace('_', '-')} {getattr(settings, name)!r} is not allowed: {allowed}")

    runs = split_list(settings.experiments)
    valid_runs = [m + suffix for m in MODELS for suffix in ("", "_dendritic", "_continued")]
    if not runs or any(run not in valid_runs for run in runs):
        refuse("experiments", f"use a comma list of {', '.join(valid_runs)}")
    if any(model_of(run)[1] == "continued" for run in runs) and not settings.warm_start:
        refuse("experiments", "a _continued control needs --warm-start (it continues the baseline)")
    if not re.fullmatch(r"\d+(,\d+)*", settings.seeds.replace(" ", "")):
        refuse("seeds", "use a comma list of whole numbers, such as 0,1,2")
    for name in ("epochs", "batch_size", "max_dendrites", "dendrite_epochs", "history_epochs"):
        if getattr(settings, name) < 1:
            refuse(name, "use a whole number of at least 1")
    for name in ("lr", "dendrite_lr"):
        if not 0 < getattr(settings, name) <= 10:
            refuse(name, "use a learning rate above 0 and at most 10")
    for name, low, high in (("momentum", 0, 1), ("weight_decay", 0, 1), ("label_smoothing", 0, 1)):
        if not low <= getattr(settings, name) < high:
            refuse(name, f"use a value in [{low}, {high})")
    if settings.checkpoint_seconds < 0:
        refuse("checkpoint_seconds", "use 0 (after every epoch) or more seconds")
    if not 0 <= settings.warmup_epochs < settings.epochs:
        refuse("warmup_epochs", f"use 0 to {settings.epochs - 1} (fewer than --epochs)")
    if not 0 < settings.val_split < 50000:
        refuse("val_split", "hold out between 1 and 49,999 of the 50,000 training images")
    if not 0 <= settings.cutout <= 32:
        refuse("cutout", "use 0 (off) to 32 pixels")
    if settings.precision not in ("auto", "bf16", "fp16", "fp32"):
        refuse("precision", "use auto, bf16, fp16 or fp32")
    if settings.switch_mode not in ("fixed", "history"):
        refuse("switch_mode", "use fixed or history")
    if not (settings.device in ("auto", "cpu", "mps") or settings.device.split(":")[0] == "cuda"):
        refuse("device", "use auto, cpu, mps, cuda or cuda:N")
    if settings.dataset not in DATASETS:
        refuse("dataset", f"use {' or '.join(DATASETS)}")
    dendritic_models = {model_of(run)[0] for run in runs if model_of(run)[1] == "dendritic"}
    for model_name in sorted(dendritic_models):
        slots = dendrite_slots(build_model(model_name))
        chosen = dendrite_modules_of(model_name, settings.dendrite_modules)
        if not chosen or any(name not in slots for name in chosen):
            refuse("dendrite_modules", f"use auto or name conv+bn pairs of {model_name}: {', '.join(slots)}")
    if settings.wandb_project and not wandb_installed():
        refuse("wandb_project", "wandb is not installed: pip install wandb, or leave --wandb-project empty")
    if settings.run_name and not re.fullmatch(r"[\w.-]+", settings.run_name):
        refuse("run_name", "use letters, digits, '_', '-' or '.' (it names a folder in --results-dir)")
    try:
        os.makedirs(settings.results_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=settings.results_dir).close()
    except OSError as error:
        refuse("results_dir", f"it cannot be written ({error.strerror}); choose a writable folder")


def wandb_installed():
    return importlib.util.find_spec("wandb") is not None


def pick_device(name):
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
    """bf16 autocast on CUDA, fp16 (with a gradient scaler) on GPUs without bf16, else fp32."""
    if name != "auto":
        return name
    if device.type == "cuda":
        # Without native bf16 (before Ampere) emulated bf16 is slow: fp16 with a scaler instead.
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "fp32"


# ---------------------------------------------------------------------------------------------
# Data: CIFAR as uint8 tensors on the training device, augmented there in whole batches.
# ---------------------------------------------------------------------------------------------

DATASETS = {
    "cifar100": dict(name="CIFAR-100", folder="cifar-100-python", torchvision="CIFAR100", train=["train"],
                     test=["test"], labels="fine_labels", meta="meta", names="fine_label_names", classes=100,
                     mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
    "cifar10": dict(name="CIFAR-10", folder="cifar-10-batches-py", torchvision="CIFAR10",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"], labels="labels",
                    meta="batches.meta", names="label_names", classes=10,
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
}
SPLIT_SEED = 0  # the validation split is the same for every run and every --seed
SMOKE_SIZES = {"train": 256, "val": 256, "test": 256}

Data = collections.namedtuple(
    "Data", "train_images train_labels val_images val_labels test_images test_labels classes"
)


def dataset_folder(data_dir, spec):
    """The dataset's python-pickle folder, downloaded through torchvision when it is missing."""
    folder = os.path.join(data_dir, spec["folder"])
    if not os.path.isdir(folder):
        import torchvision
        try:
            getattr(torchvision.datasets, spec["torchvision"])(data_dir, train=True, download=True)
        except Exception as error:  # no network, a proxy, a full disk: all end the same way
            raise ExperimentError(
                f"{spec['name']} is not in {folder} and could not be downloaded ({error}); put the "
                f"extracted {spec['folder']} folder in {os.path.abspath(data_dir)}"
            ) from None
    return folder


def read_cifar_file(path, spec=DATASETS["cifar100"]):
    """One CIFAR pickle -> (uint8 images N x 3 x 32 x 32, int64 labels), checked."""
    num_classes = spec["classes"]
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images = torch.as_tensor(batch["data"], dtype=torch.uint8)
        labels = torch.as_tensor(batch[spec["labels"]], dtype=torch.int64)
    except FileNotFoundError:
        raise ExperimentError(f"{path} is missing: delete the {spec['folder']} folder to download it again, "
                              "or put the complete folder there") from None
    except Exception as error:
        raise ExperimentError(f"{path} is not a readable {spec['name']} pickle ({type(error).__name__}: {error}); "
                              f"delete the {spec['folder']} folder to download it again") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise ExperimentError(f"{path} holds data of shape {tuple(images.shape)} with {len(labels)} labels; "
                              "expected N x 3072 images and N labels: replace the file")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ExperimentError(f"{path} has labels outside 0..{num_classes - 1}: replace the file")
    return images.view(-1, 3, 32, 32), labels


def read_split(folder, files, spec):
    parts = [read_cifar_file(os.path.join(folder, name), spec) for name in files]
    return torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])


def read_class_names(folder, spec):
    try:
        with open(os.path.join(folder, spec["meta"]), "rb") as f:
            return list(pickle.load(f, encoding="latin1")[spec["names"]])
    except Exception:
        return [f"class {i}" for i in range(spec["classes"])]  # names are only for display


def load_data(settings, device):
    """Train/validation/test tensors on the device. The split is fixed by SPLIT_SEED."""
    spec = DATASETS[settings.dataset]
    folder = dataset_folder(settings.data_dir, spec)
    train_images, train_labels = read_split(folder, spec["train"], spec)
    test_images, test_labels = read_split(folder, spec["test"], spec)
    if settings.val_split >= len(train_images):
        raise ExperimentError(f"--val-split {settings.val_split} leaves no training images "
                              f"({len(train_images)} in {folder}); use a smaller split")
    order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_index, train_index = order[:settings.val_split], order[settings.val_split:]
    parts = {
        "train": (train_images[train_index], train_labels[train_index]),
        "val": (train_images[val_index], train_labels[val_index]),
        "test": (test_images, test_labels),
    }
    if settings.smoke:
        parts = {k: (x[:SMOKE_SIZES[k]], y[:SMOKE_SIZES[k]]) for k, (x, y) in parts.items()}
    tensors = [t.to(device) for images, labels in parts.values() for t in (images, labels)]
    return Data(*tensors, read_class_names(folder, spec))


@functools.lru_cache(maxsize=None)
def normalisation(dataset, device):
    """Mean and std (0-255 scale) on the device, made once: a tensor built from a list on a GPU
    is a blocking copy, which would stall the training step."""
    return tuple(torch.tensor(DATASETS[dataset][key], device=device) * 255 for key in ("mean", "std"))


def prepare_batch(images, augment=False, cutout=0, memory_format=torch.channels_last, dataset="cifar100"):
    """uint8 N x 3 x H x W -> normalised float in memory_format, optionally augmented.

    Crop and flip index whole batches at once (no per-image Python); cutout zeroes a square
    after normalisation, i.e. sets it to the mean colour.
    """
    n, _, height, width = images.shape
    device = images.device
    pixels = images.permute(0, 2, 3, 1)  # crop and flip gather whole pixels (NHWC)
    if augment:
        padded = F.pad(pixels, (0, 0, 4, 4, 4, 4))
        top = torch.randint(0, 9, (n, 1, 1), device=device)
        left = torch.randint(0, 9, (n, 1, 1), device=device)
        rows = top + torch.arange(height, device=device).view(1, -1, 1)
        cols = left + torch.arange(width, device=device).view(1, 1, -1)
        flip = torch.rand(n, 1, 1, device=device) < 0.5
        cols = torch.where(flip, 2 * left + width - 1 - cols, cols)  # mirror inside the crop
        pixels = padded[torch.arange(n, device=device).view(-1, 1, 1), rows, cols]
    mean, std = normalisation(dataset, device)
    x = ((pixels.float() - mean) / std).permute(0, 3, 1, 2)
    if cutout:
        center_y = torch.randint(0, height, (n, 1, 1), device=device)
        center_x = torch.randint(0, width, (n, 1, 1), device=device)
        ys = torch.arange(height, device=device).view(1, -1, 1)
        xs = torch.arange(width, device=device).view(1, 1, -1)
        inside = ((ys - center_y).abs() * 2 < cutout) & ((xs - center_x).abs() * 2 < cutout)
        x = x * (~inside).unsqueeze(1)
    return x.contiguous(memory_format=memory_format)


# ---------------------------------------------------------------------------------------------
# Files: written to a temporary file in the same folder, then renamed, so a kill never leaves
# half a file behind.
# ---------------------------------------------------------------------------------------------

TEMPORARY_PREFIX = ".tmp-"


def write_atomic(path, data):
    """Write bytes or text to path so that readers see the old file or the new one, never half."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_json(path, value):
    write_atomic(path, json.dumps(value, indent=2) + "\n")


def read_json(path):
    """The JSON at path, or None when it is missing or unreadable (a crash can leave neither)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_torch(path, value):
    buffer = io.BytesIO()
    torch.save(value, buffer)
    write_atomic(path, buffer.getvalue())


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def write_csv(path, rows):
    columns = list(rows[0]) if rows else []
    lines = [",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in rows]
    write_atomic(path, "\n".join(lines) + "\n")


def save_figure(figure, path):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
    pyplot().close(figure)
    write_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Pictures of one run: its curves and the test images it got wrong.
# ---------------------------------------------------------------------------------------------

def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no screen needed
    import matplotlib.pyplot as plt
    return plt


def curves_figure(history, title):
    """Train and validation loss and accuracy by epoch; a dotted line where a dendrite was added."""
    plt = pyplot()
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [int(row["epoch"]) for row in history]
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for split, style in (("train", "-o"), ("val", "--o")):
            axes.plot(epochs, [float(row[f"{split}_{metric}"]) for row in history], style, markersize=3,
                      label="validation" if split == "val" else split)
        counts = [int(row.get("dendrites") or 0) for row in history]
        for epoch, previous, count in zip(epochs, [0] + counts, counts):  # a warm start adds one before epoch 1
            if count > previous:
                axes.axvline(epoch - 0.5, color="tab:green", linestyle=":")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric + (" (%)" if metric == "accuracy" else ""))
        axes.grid(alpha=0.3)
    loss_axes.legend()
    if any(int(row.get("dendrites") or 0) for row in history):
        accuracy_axes.plot([], [], color="tab:green", linestyle=":", label="dendrite added")
        accuracy_axes.legend()
    figure.suptitle(title)
    return figure


def misclassified_figure(images, labels, predicted, classes, count=24):
    """A grid of the first `count` test images the model got wrong, with true and predicted names."""
    plt = pyplot()
    wrong = (predicted != labels).nonzero().flatten()[:count].tolist()
    columns = 6
    rows = max(1, math.ceil(len(wrong) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, wrong):
        axes.imshow(images[index].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
        axes.set_title(f"true: {classes[labels[index]]}\npredicted: {classes[predicted[index]]}", fontsize=7)
    figure.suptitle(f"{len(wrong)} of {int((predicted != labels).sum())} misclassified test images")
    return figure


def write_run_pictures(run_dir, run_name, data):
    """curves.png and misclassified.png of a finished run."""
    history = read_csv(os.path.join(run_dir, "history.csv"))
    save_figure(curves_figure(history, run_name), os.path.join(run_dir, "curves.png"))
    predictions = torch.load(os.path.join(run_dir, "test_predictions.pt"), weights_only=True)
    figure = misclassified_figure(data.test_images, predictions["labels"].long(), predictions["predicted"].long(),
                                  data.classes)
    save_figure(figure, os.path.join(run_dir, "misclassified.png"))


# ---------------------------------------------------------------------------------------------
# Report: summary.json is the data; summary.md and comparison.png are drawn from it alone.
# ---------------------------------------------------------------------------------------------

# Two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the value for 30,
# slightly conservative), so that no statistics package is needed.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}
BOOTSTRAP_RESAMPLES = 10000

# (run, against, what the difference measures), for every model that has a dendritic run.
COMPARISONS = (
    ("{m}_dendritic", "{m}", "what dendrites and extra epochs gave together"),
    ("{m}_continued", "{m}", "what the extra epochs alone gave"),
    ("{m}_dendritic", "{m}_continued", "what the dendrites gave beyond the extra epochs"),
)


def seed_interval(differences):
    """Mean and 95% t interval of paired per-seed differences (at least two)."""
    n = len(differences)
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    t = T_975[max(df for df in T_975 if df <= n - 1)]
    return mean, mean - t * sd / math.sqrt(n), mean + t * sd / math.sqrt(n)


def bootstrap_interval(correct_a, correct_b, seed=0):
    """Accuracy difference a - b (points) with a paired bootstrap 95% interval over test images.

    Each image contributes +1, -1 or 0 to the difference; resampling images with replacement is
    a multinomial draw of those three counts, so 10,000 resamples cost nothing.
    """
    import numpy as np

    n = len(correct_a)
    wins = int((correct_a & ~correct_b).sum())
    losses = int((~correct_a & correct_b).sum())
    counts = np.random.default_rng(seed).multinomial(n, [wins / n, losses / n, 1 - (wins + losses) / n],
                                                     size=BOOTSTRAP_RESAMPLES)
    resampled = 100 * (counts[:, 0] - counts[:, 1]) / n
    low, high = np.percentile(resampled, [2.5, 97.5])
    return 100 * (wins - losses) / n, float(low), float(high)


def compare_runs(runs, run_dirs):
    """Accuracy differences with 95% intervals: over seeds when there are several, else over
    test images (paired bootstrap on the saved predictions)."""
    accuracy = {(run["name"], run["seed"]): run["test_accuracy"] for run in runs}
    models = {run["model"] for run in runs if run["dendritic"]}
    comparisons = []
    for model in sorted(models):
        for run_pattern, against_pattern, meaning in COMPARISONS:
            a, b = run_pattern.format(m=model), against_pattern.format(m=model)
            seeds = sorted(seed for name, seed in accuracy if name == a and (b, seed) in accuracy)
            if not seeds:
                continue
            if len(seeds) > 1:
                difference, low, high = seed_interval([accuracy[a, s] - accuracy[b, s] for s in seeds])
                method = f"t interval over {len(seeds)} seeds"
            else:
                correct = [torch.load(os.path.join(run_dirs[name, seeds[0]], "test_predictions.pt"))
                           for name in (a, b)]
                difference, low, high = bootstrap_interval(*[(c["predicted"] == c["labels"]).numpy() for c in correct])
                method = (f"paired bootstrap over {len(correct[0]['labels']):,} test images, seed {seeds[0]} only: "
                          "test-set noise for these trained weights, not the seed-to-seed spread")
            comparisons.append(dict(run=a, against=b, meaning=meaning, difference=difference, low=low,
                                    high=high, method=method, distinguishable=low > 0 or high < 0))
    return comparisons


def aggregate(runs):
    """One row per run name: mean and spread over seeds, with the gains the table reports."""
    rows = {}
    for run in runs:
        row = rows.setdefault(run["name"], dict(run, accuracies=[], val_accuracies=[], param_counts=[],
                                                dendrite_counts=[], epoch_counts=[]))
        row["accuracies"].append(run["test_accuracy"])
        row["val_accuracies"].append(run["val_accuracy"])
        row["param_counts"].append(run["params"])
        row["dendrite_counts"].append(run["dendrites"])
        row["epoch_counts"].append(run["epochs"])
    for row in rows.values():
        n = len(row["accuracies"])
        row["test_accuracy"] = sum(row["accuracies"]) / n
        row["val_accuracy"] = sum(row["val_accuracies"]) / n
        row["params"] = sum(row["param_counts"]) / n  # seeds of a dendritic run may keep different dendrites
        row["dendrites"] = spread_text(row["dendrite_counts"])
        row["epochs"] = spread_text(row["epoch_counts"])
        row["test_sd"] = (math.sqrt(sum((a - row["test_accuracy"]) ** 2 for a in row["accuracies"]) / (n - 1))
                          if n > 1 else math.nan)
    small, large = rows.get("resnet18"), rows.get("resnet34")
    for row in rows.values():
        if small:
            row["accuracy_gained"] = row["test_accuracy"] - small["test_accuracy"]
            row["error_removed"] = row["accuracy_gained"] / (100 - small["test_accuracy"])
        if large:
            row["params_saved"] = 1 - row["params"] / large["params"]
    return list(rows.values())


def spread_text(values):
    """'3' when every seed agrees, else '2-3'."""
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def summary_markdown(runs, comparisons):
    def cell(row, key, fmt):
        return format(row[key], fmt) if key in row and not math.isnan(row[key]) else "n/a"

    rows = aggregate(runs)
    several_seeds = any(len(row["accuracies"]) > 1 for row in rows)
    lines = [
        "# Results",
        "",
        "| run | test acc. (%) | " + ("± sd | seeds | " if several_seeds else "") +
        "val. acc. (%) | params (M) | dendrites | epochs | start | "
        "acc. gained vs ResNet-18 (points) | ResNet-18 error removed | params saved vs ResNet-34 |",
        "|---|---:|" + ("---:|---|" if several_seeds else "") + "---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        spread = (f"{cell(row, 'test_sd', '.2f')} | {', '.join(f'{a:.2f}' for a in row['accuracies'])} | "
                  if several_seeds else "")
        lines.append(
            f"| {row['name']} | {row['test_accuracy']:.2f} | {spread}{row['val_accuracy']:.2f} | "
            f"{row['params'] / 1e6:.2f} | {row['dendrites']} | {row['epochs']} | {row.get('start', 'scratch')} | "
            f"{cell(row, 'accuracy_gained', '+.2f')} | {cell(row, 'error_removed', '.1%')} | "
            f"{cell(row, 'params_saved', '.1%')} |"
        )
    lines += [
        "",
        "Test accuracy is measured once, after training; model selection and dendrite decisions "
        "used the validation split only. *Error removed*: the share of ResNet-18's test error that "
        "the run removes. *Params saved*: how many fewer parameters than ResNet-34. A `_continued` "
        "run is the control: the baseline trained on for as many epochs as the dendritic run, "
        "with the same schedule and no dendrites.",
    ]
    if comparisons:
        lines += ["", "## Is the difference real?", ""]
        for c in comparisons:
            verdict = ("distinguishable from zero" if c["distinguishable"] else
                       "not distinguishable from zero (the interval includes 0)")
            lines.append(f"- **{c['run']} − {c['against']}** ({c['meaning']}): {c['difference']:+.2f} points, "
                         f"95% interval [{c['low']:+.2f}, {c['high']:+.2f}] ({c['method']}); {verdict}.")
    return "\n".join(lines) + "\n"


def comparison_figure(runs):
    """Left: test accuracy against parameters, every seed a dot, the mean with its spread.
    Right: validation accuracy after each dendrite addition (the library's per-architecture
    scores) beside the baselines' validation accuracy."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for row in aggregate(runs):
        colour = "tab:green" if row["dendritic"] else "tab:orange" if row["name"].endswith("_continued") else "tab:blue"
        x = row["params"] / 1e6
        left.scatter([p / 1e6 for p in row["param_counts"]], row["accuracies"], s=14, color=colour, alpha=0.5, zorder=2)
        sd = 0 if math.isnan(row["test_sd"]) else row["test_sd"]
        left.errorbar(x, row["test_accuracy"], yerr=sd, fmt="o", ms=8, color=colour, capsize=4, zorder=3)
        left.annotate(row["name"], (x, row["test_accuracy"]), textcoords="offset points", xytext=(7, 4), fontsize=9)
        if row.get("architectures"):
            params, scores = zip(*row["architectures"])
            right.plot([p / 1e6 for p in params], scores, "-o", color=colour, label=f"{row['name']} (0, 1, 2, ... dendrites)")
        elif not row["name"].endswith("_continued"):
            right.scatter(x, row["val_accuracy"], s=60, color=colour, zorder=3)
            right.annotate(row["name"], (x, row["val_accuracy"]), textcoords="offset points", xytext=(7, 4), fontsize=9)
    left.set_title("Test accuracy: baselines (blue), dendrites (green), control (orange)")
    left.set_ylabel(f"{DATASETS[runs[0].get('dataset', 'cifar100')]['name']} test accuracy (%)")
    right.set_title("Validation accuracy after each dendrite addition")
    right.set_ylabel("best validation accuracy (%)")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8, loc="lower right")
    for axes in (left, right):
        axes.set_xlabel("parameters (millions)")
        axes.grid(alpha=0.3)
        axes.margins(x=0.2, y=0.2)
    return figure


def write_report(results_dir, runs, comparisons):
    """summary.json, summary.md and comparison.png for these runs."""
    write_json(os.path.join(results_dir, "summary.json"), {"runs": runs, "comparisons": comparisons})
    redraw_report(results_dir)


def redraw_report(results_dir):
    """summary.md and comparison.png from summary.json alone (main.py --plot-only)."""
    summary = read_json(os.path.join(results_dir, "summary.json"))
    if not summary or not summary.get("runs"):
        raise ExperimentError(f"{results_dir}/summary.json is missing or empty: run the experiment first")
    write_atomic(os.path.join(results_dir, "summary.md"), summary_markdown(summary["runs"], summary.get("comparisons", [])))
    save_figure(comparison_figure(summary["runs"]), os.path.join(results_dir, "comparison.png"))
