"""Settings, data, files and the report: everything main.py and train.py share."""
import argparse
import collections
import io
import json
import math
import os
import pickle
import re
import tempfile
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import config
from models import MODELS, split_list


class ExperimentError(Exception):
    """A problem the user can fix: printed as one line, exit status 2, no traceback."""


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
    check_settings(settings)
    return settings


def model_of(run_name):
    """'resnet18_dendritic' -> ('resnet18', True)."""
    model = run_name.removesuffix("_dendritic")
    return model, model != run_name


def check_settings(settings):
    """Refuse an impossible setting before any work, naming the setting and what is allowed."""
    def refuse(name, allowed):
        raise ExperimentError(f"--{name.replace('_', '-')} {getattr(settings, name)!r} is not allowed: {allowed}")

    runs = split_list(settings.experiments)
    valid_runs = [m + suffix for m in MODELS for suffix in ("", "_dendritic")]
    if not runs or any(run not in valid_runs for run in runs):
        refuse("experiments", f"use a comma list of {', '.join(valid_runs)}")
    for name in ("epochs", "batch_size", "max_dendrites", "dendrite_epochs", "history_epochs"):
        if getattr(settings, name) < 1:
            refuse(name, "use a whole number of at least 1")
    for name in ("lr", "dendrite_lr"):
        if not 0 < getattr(settings, name) <= 10:
            refuse(name, "use a learning rate above 0 and at most 10")
    for name, low, high in (("momentum", 0, 1), ("weight_decay", 0, 1), ("label_smoothing", 0, 1)):
        if not low <= getattr(settings, name) < high:
            refuse(name, f"use a value in [{low}, {high})")
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
    dendritic_models = {model_of(run)[0] for run in runs if model_of(run)[1]}
    for model_name in dendritic_models:
        from models import build_model, dendrite_slots
        slots = dendrite_slots(build_model(model_name))
        chosen = split_list(settings.dendrite_modules)
        if not chosen or any(name not in slots for name in chosen):
            refuse("dendrite_modules", f"name conv+bn pairs of {model_name}: {', '.join(slots)}")
    try:
        os.makedirs(settings.results_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=settings.results_dir).close()
    except OSError as error:
        refuse("results_dir", f"it cannot be written ({error.strerror}); choose a writable folder")


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
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


# ---------------------------------------------------------------------------------------------
# Data: CIFAR-100 as uint8 tensors on the training device, augmented there in whole batches.
# ---------------------------------------------------------------------------------------------

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
SPLIT_SEED = 0  # the validation split is the same for every run and every --seed
SMOKE_SIZES = {"train": 256, "val": 256, "test": 256}

Data = collections.namedtuple(
    "Data", "train_images train_labels val_images val_labels test_images test_labels classes"
)


def cifar100_folder(data_dir):
    """The cifar-100-python folder, downloaded through torchvision when it is missing."""
    folder = os.path.join(data_dir, "cifar-100-python")
    if not os.path.isdir(folder):
        import torchvision
        try:
            torchvision.datasets.CIFAR100(data_dir, train=True, download=True)
        except Exception as error:  # no network, a proxy, a full disk: all end the same way
            raise ExperimentError(
                f"CIFAR-100 is not in {folder} and could not be downloaded ({error}); put the "
                f"extracted cifar-100-python folder (train, test, meta) in {os.path.abspath(data_dir)}"
            ) from None
    return folder


def read_cifar_file(path, num_classes=100):
    """One CIFAR pickle -> (uint8 images N x 3 x 32 x 32, int64 labels), checked."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images = torch.as_tensor(batch["data"], dtype=torch.uint8)
        labels = torch.as_tensor(batch["fine_labels"], dtype=torch.int64)
    except FileNotFoundError:
        raise ExperimentError(f"{path} is missing: download CIFAR-100 again (delete the folder to re-download)") from None
    except Exception as error:
        raise ExperimentError(f"{path} is not a readable CIFAR-100 pickle ({type(error).__name__}: {error}); "
                              "delete the cifar-100-python folder to download it again") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise ExperimentError(f"{path} holds data of shape {tuple(images.shape)} with {len(labels)} labels; "
                              "expected N x 3072 images and N labels: replace the file")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ExperimentError(f"{path} has labels outside 0..{num_classes - 1}: replace the file")
    return images.view(-1, 3, 32, 32), labels


def read_class_names(folder):
    try:
        with open(os.path.join(folder, "meta"), "rb") as f:
            return list(pickle.load(f, encoding="latin1")["fine_label_names"])
    except Exception:
        return [f"class {i}" for i in range(100)]  # names are only for display


def load_data(settings, device):
    """Train/validation/test tensors on the device. The split is fixed by SPLIT_SEED."""
    folder = cifar100_folder(settings.data_dir)
    train_images, train_labels = read_cifar_file(os.path.join(folder, "train"))
    test_images, test_labels = read_cifar_file(os.path.join(folder, "test"))
    if settings.val_split >= len(train_images):
        raise ExperimentError(f"--val-split {settings.val_split} leaves no training images "
                              f"({len(train_images)} in {folder}/train); use a smaller split")
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
    return Data(*tensors, read_class_names(folder))


def prepare_batch(images, augment=False, cutout=0, memory_format=torch.channels_last):
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
    mean = torch.tensor(CIFAR100_MEAN, device=device) * 255
    std = torch.tensor(CIFAR100_STD, device=device) * 255
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

def write_atomic(path, data):
    """Write bytes or text to path so that readers see the old file or the new one, never half."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
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


def write_csv(path, rows):
    columns = list(rows[0]) if rows else []
    lines = [",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in rows]
    write_atomic(path, "\n".join(lines) + "\n")


def save_figure(figure, path):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
    write_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Report: summary.json is the data; summary.md and comparison.png are drawn from it alone.
# ---------------------------------------------------------------------------------------------

def comparison_rows(runs):
    """Each run with its gains against ResNet-18 and its saving against ResNet-34, where present."""
    by_name = {run["name"]: run for run in runs}
    small, large = by_name.get("resnet18"), by_name.get("resnet34")
    rows = []
    for run in runs:
        row = dict(run)
        if small:
            gained = run["test_accuracy"] - small["test_accuracy"]
            row["accuracy_gained"] = gained
            row["error_removed"] = gained / (100 - small["test_accuracy"]) if small["test_accuracy"] < 100 else math.nan
        if large:
            row["params_saved"] = 1 - run["params"] / large["params"]
        rows.append(row)
    return rows


def summary_markdown(runs):
    def cell(row, key, fmt):
        return format(row[key], fmt) if key in row and not math.isnan(row[key]) else "n/a"

    lines = [
        "# Results",
        "",
        "| run | test acc. (%) | val. acc. (%) | params (M) | dendrites | epochs | start | "
        "acc. gained vs ResNet-18 (points) | ResNet-18 error removed | params saved vs ResNet-34 |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in comparison_rows(runs):
        lines.append(
            f"| {row['name']} | {row['test_accuracy']:.2f} | {row['val_accuracy']:.2f} | "
            f"{row['params'] / 1e6:.2f} | {row['dendrites']} | {row['epochs']} | {row.get('start', 'scratch')} | "
            f"{cell(row, 'accuracy_gained', '+.2f')} | {cell(row, 'error_removed', '.1%')} | "
            f"{cell(row, 'params_saved', '.1%')} |"
        )
    lines += [
        "",
        "Test accuracy is measured once, after training; model selection and dendrite decisions "
        "used the validation split only. *Error removed*: the share of ResNet-18's test error that "
        "the run removes. *Params saved*: how many fewer parameters than ResNet-34.",
    ]
    return "\n".join(lines) + "\n"


def comparison_figure(runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for run in runs:
        colour = "tab:green" if run["dendritic"] else "tab:blue"
        axes.scatter(run["params"] / 1e6, run["test_accuracy"], s=60, color=colour, zorder=3)
        axes.annotate(run["name"], (run["params"] / 1e6, run["test_accuracy"]),
                      textcoords="offset points", xytext=(6, 4), fontsize=9)
    axes.set_xlabel("parameters (millions)")
    axes.set_ylabel("CIFAR-100 test accuracy (%)")
    axes.set_title("Accuracy against size: baselines (blue), with dendrites (green)")
    axes.grid(alpha=0.3)
    axes.margins(x=0.2, y=0.2)
    return figure


def write_report(results_dir, runs):
    """summary.json, summary.md and comparison.png for these runs."""
    write_json(os.path.join(results_dir, "summary.json"), {"runs": runs})
    redraw_report(results_dir)


def redraw_report(results_dir):
    """summary.md and comparison.png from summary.json alone (main.py --plot-only)."""
    summary = read_json(os.path.join(results_dir, "summary.json"))
    if not summary or not summary.get("runs"):
        raise ExperimentError(f"{results_dir}/summary.json is missing or empty: run the experiment first")
    runs = summary["runs"]
    write_atomic(os.path.join(results_dir, "summary.md"), summary_markdown(runs))
    save_figure(comparison_figure(runs), os.path.join(results_dir, "comparison.png"))
