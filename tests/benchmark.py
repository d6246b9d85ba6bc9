"""Throughput of the real training step against the common CIFAR recipe, on one device; what is timed
and how to read it: docs/performance.md, "The benchmark".

    python tests/benchmark.py               # on the GPU when there is one
    python tests/benchmark.py --quick       # tiny batches, few steps: under a minute on 2 CPU cores
    python tests/benchmark.py --project DIR     # the default experiment's time (projection.py)

Prints a table and writes results/benchmark.json (--output). Without --quick a CPU takes hours at
batch 512: there, pass a small --batch-size and --steps.
"""
import argparse
import contextlib
import importlib.metadata
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as python tests/benchmark.py
from dendritic_experiment import config  # noqa: E402
from dendritic_experiment.costs import model_macs  # noqa: E402
from dendritic_experiment.data import DATASETS, epoch_draws, prepare_batch  # noqa: E402
from dendritic_experiment.dendrites import DendriteTracker  # noqa: E402
from dendritic_experiment.models import build_model, dendrite_modules_of  # noqa: E402
from dendritic_experiment.settings import parse_settings, pick_device, pick_precision  # noqa: E402
from dendritic_experiment.train import TrainingSetup, training_step  # noqa: E402
from dendritic_experiment.utils import run_cli, write_json  # noqa: E402

from projection import project  # noqa: E402

FULL = dict(batch_size=512, steps=50, warmup_steps=10)
QUICK = dict(batch_size=16, steps=3, warmup_steps=2)  # every stage, seconds per model on 2 CPU cores
MATMUL_SIZE = {"cuda": 8192, "mps": 4096, "cpu": 2048, "cpu quick": 1024}  # 8192^3 takes about a minute on a small CPU
RESIDENT_BATCHES = 8  # random images held: 8 training batches, enough to draw batches from and one eval batch
DENDRITE_COST_GOAL = 1.2  # a dendrite should cost at most 1.2x its share of the FLOPs in time
AUGMENTATION_SHARE_GOAL = 0.05  # augmentation and indexing should take under 5% of a step


# ---------------------------------------------------------------------------------------------
# Flags and environment
# ---------------------------------------------------------------------------------------------

def at_least(low):
    """An argparse type: a whole number >= low, refused with a message that says so."""
    def whole_number(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"use a whole number of at least {low}, not {text!r}")
        return value
    return whole_number


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python tests/benchmark.py",
        description="Training and evaluation throughput of the project's training step against a "
        "DataLoader + PIL reference, on one device. Writes a JSON file and prints a table.")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when a GPU is visible, else cpu")
    parser.add_argument("--batch-size", type=at_least(1), metavar="N",
                        help=f"training images per step (default {FULL['batch_size']}; {QUICK['batch_size']} "
                        "with --quick); evaluation uses twice as many")
    parser.add_argument("--steps", type=at_least(1), metavar="N",
                        help=f"timed steps per measurement (default {FULL['steps']}; {QUICK['steps']} with --quick)")
    parser.add_argument("--warmup-steps", type=at_least(0), metavar="N",
                        help=f"untimed steps before each measurement (default {FULL['warmup_steps']}; "
                        f"{QUICK['warmup_steps']} with --quick)")
    parser.add_argument("--width", type=float, default=config.width, metavar="W", help="as main.py's --width")
    parser.add_argument("--quick", action="store_true", help="tiny batches and few steps: checks the benchmark runs")
    parser.add_argument("--output", default=os.path.join("results", "benchmark.json"), metavar="PATH",
                        help="the JSON file written (default %(default)s)")
    parser.add_argument("--project", metavar="DIR",
                        help="measure nothing: read a short main.py run in DIR (default settings, fewer --epochs) "
                        "and project the default experiment's wall time from its seconds per epoch; "
                        "writes DIR/projection.json")
    args = parser.parse_args(argv)
    if args.project:
        return args
    defaults = QUICK if args.quick else FULL
    for name in ("batch_size", "steps", "warmup_steps"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    args.device = pick_device(args.device)  # main.py's reading of --device
    args.matmul_size = MATMUL_SIZE.get(args.device.type + " quick" * args.quick, MATMUL_SIZE[args.device.type])
    try:  # a bad path should fail now, not after minutes of measuring
        folder = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        parser.error(f"--output {args.output}: cannot write there ({error.strerror})")
    return args


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device):
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine() or 'unknown'} CPU, {usable_cores()} cores"
    return {"device": name, "device_type": device.type, "python": platform.python_version(),
            "torch": version("torch"), "torchvision": version("torchvision"), "perforatedai": version("perforatedai")}


def log(message):
    tqdm.write(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

def usable_cores():
    """Cores this process may run on (in a container, os.cpu_count() can count the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def time_steps(step, args, description):
    """Seconds taken by each of args.steps calls of step(), after args.warmup_steps untimed calls."""
    for _ in range(args.warmup_steps):
        step()
    if args.device.type == "cuda":
        torch.cuda.synchronize(args.device)
        # Peak memory of the timed steps only: the warm-up's cuDNN kernel search tries kernels
        # with scratch memory of their own.
        torch.cuda.reset_peak_memory_stats(args.device)
    steps = tqdm(range(args.steps), desc=description, leave=False, disable=not sys.stderr.isatty())
    if args.device.type != "cuda":
        seconds = []
        for _ in steps:  # the CPU computes synchronously: the wall clock is the step's time
            started = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - started)
        return seconds
    # CUDA events are stamped on the GPU's own timeline, so there is no host sync inside the loop
    # (which would itself slow the step) and each step's time includes any wait for its inputs.
    events = []
    for _ in steps:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize(args.device)
    return [start.elapsed_time(end) / 1000 for start, end in events]


def median_seconds(step, args, description):
    return statistics.median(time_steps(step, args, description))


def matmul_rate(args, dtype):
    """Measured FLOP/s of one large square matrix multiply: the most this device does in practice."""
    size = args.matmul_size
    a, b = (torch.randn(size, size, device=args.device, dtype=dtype) for _ in range(2))
    seconds = median_seconds(lambda: a @ b, args, f"matmul {size}^3")
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "flops_per_s": 2 * size ** 3 / seconds}


def peak_memory(device):
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


# ---------------------------------------------------------------------------------------------
# Our pipeline: uint8 images on the device, train.training_step
# ---------------------------------------------------------------------------------------------

def measure_training(model, optimizer, images, labels, setup, args, name):
    """Median step time and peak memory of training_step on random batches, as an epoch draws them."""
    scaler = setup.grad_scaler()
    model.train()
    draws = batch_draws(images, setup, args)

    def step():
        index = torch.randint(0, len(images), (args.batch_size,), device=images.device)
        training_step(model, images[index], labels[index], optimizer, setup, scaler, draws)

    seconds = median_seconds(step, args, f"{name} training")
    return {"train_step_ms_median": 1000 * seconds, "train_images_per_s": args.batch_size / seconds,
            "peak_memory_bytes": peak_memory(args.device)}


@torch.no_grad()
def measure_evaluation(model, images, setup, args, name):
    """Images/s of what train.evaluate does per batch: no augmentation, autocast, no gradients."""
    model.eval()
    batch = images[:2 * args.batch_size]

    def step():
        x = prepare_batch(batch, memory_format=setup.memory_format, dataset=setup.settings.dataset)
        with setup.autocast():
            model(x)

    return {"eval_images_per_s": len(batch) / median_seconds(step, args, f"{name} evaluation")}


def measure_augmentation(images, setup, args):
    """Indexing a random batch and augmenting it alone: the data path's cost inside a step."""
    settings = setup.settings
    draws = batch_draws(images, setup, args)

    def step():
        index = torch.randint(0, len(images), (args.batch_size,), device=images.device)
        prepare_batch(images[index], settings.augment, settings.cutout, setup.memory_format, settings.dataset,
                      draws=draws)

    return 1000 * median_seconds(step, args, "augmentation")


def batch_draws(images, setup, args):
    """One batch's crops, flips and cutouts on the device, as an epoch's are (drawn once per epoch)."""
    return epoch_draws(images, args.batch_size, 1, setup.settings.augment, setup.settings.cutout)[1]


def measure_model(name, model, params, optimizer, images, labels, setup, args):
    entry = {"params": params, "forward_flops_per_image": 2 * model_macs(model)}  # a multiply-add is 2 FLOPs
    entry.update(measure_training(model, optimizer, images, labels, setup, args, name))
    entry.update(measure_evaluation(model, images, setup, args, name))
    log(f"{name}: training {entry['train_images_per_s']:,.0f} images/s, "
        f"evaluation {entry['eval_images_per_s']:,.0f} images/s")
    return entry


def dendritic_models(setup, work_dir, images, labels):
    """Yields (dendrite count, model, parameters, the optimizer a dendritic run trains it with) for resnet18
    with 1, then 2 dendrites, grown as runs.DendriticRun.warm_start grows them; the tracker closes after the last."""
    settings = setup.settings
    modules = dendrite_modules_of("resnet18", settings.dendrite_modules)
    model = setup.place(build_model("resnet18", width=settings.width))
    with contextlib.redirect_stdout(sys.stderr):  # the library's import banner; stdout is for the table
        tracker = DendriteTracker(model, modules, settings, work_dir, str(setup.device))
    x = prepare_batch(images[:2], memory_format=setup.memory_format, dataset=settings.dataset)

    def new_optimizer():
        return tracker.setup_optimizer(torch.optim.SGD, setup.optimizer_kwargs(setup.scaled_dendrite_lr),
                                       torch.optim.lr_scheduler.LambdaLR, dict(lr_lambda=lambda epoch: 1.0))[0]

    with tracker:
        tracker.model = setup.place(tracker.model)
        for count in (1, 2):
            new_optimizer()  # the tracker needs one before any score
            tracker.learn_shapes(x, labels[:2])
            # A rising score: the tracker keeps each dendrite and adds the next.
            model, _, _ = tracker.end_epoch(10.0 * count, 10.0 * count, 0, force_switch=True)
            yield count, setup.place(model), tracker.parameter_count(), new_optimizer()


def measure_ours(images, labels, setup, args, work_dir):
    """Every model through the real training step; and the augmentation's share of a resnet18 step."""
    images, labels = images.to(args.device), labels.to(args.device)  # resident, as data.load_data keeps them
    entries = {}
    for name in ("resnet18", "resnet34"):
        model = setup.place(build_model(name, width=setup.settings.width))
        optimizer = torch.optim.SGD(model.parameters(), **setup.optimizer_kwargs(setup.scaled_lr))
        entries[name] = measure_model(name, model, sum(p.numel() for p in model.parameters()), optimizer,
                                      images, labels, setup, args)
        del model, optimizer  # one model's memory at a time, for the peak-memory figures
    augmentation_ms = measure_augmentation(images, setup, args)
    augmentation = {"ms_median": augmentation_ms,
                    "share_of_resnet18_step": augmentation_ms / entries["resnet18"]["train_step_ms_median"],
                    "goal": AUGMENTATION_SHARE_GOAL}
    for count, model, params, optimizer in dendritic_models(setup, work_dir, images, labels):
        name = f"resnet18_dendritic_{count}"
        entries[name] = dict(measure_model(name, model, params, optimizer, images, labels, setup, args),
                             dendrites=count)
    return entries, augmentation


# ---------------------------------------------------------------------------------------------
# Reference: the common CIFAR script (torchvision dataset of PIL images, DataLoader, fp32)
# ---------------------------------------------------------------------------------------------

class PILImages(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR100 does per item: a PIL image from HWC uint8, then the transforms."""

    def __init__(self, images_hwc, labels, transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def reference_batches(images, labels, args, steps):
    """A DataLoader as the common script builds it, drawing batches for `steps` steps in one pass
    (no epoch ends inside the timed steps: on the full 50,000 images they are rare)."""
    spec = DATASETS["cifar100"]
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(spec["mean"], spec["std"])])
    dataset = PILImages(images.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy(), transform)  # HWC, as CIFAR
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=steps * args.batch_size)
    return torch.utils.data.DataLoader(dataset, args.batch_size, sampler=sampler, num_workers=usable_cores(),
                                       pin_memory=args.device.type == "cuda", drop_last=True)


def measure_reference(name, images, labels, args):
    model = build_model(name, width=args.width).to(args.device)  # fp32, NCHW
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    # The workers stop when this iterator is freed, as this function returns.
    batches = iter(reference_batches(images, labels, args, args.warmup_steps + args.steps))

    def step():
        x, y = next(batches)  # data loading is part of the step
        x, y = x.to(args.device, non_blocking=True), y.to(args.device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = median_seconds(step, args, f"reference {name}")
    entry = {"train_step_ms_median": 1000 * seconds, "train_images_per_s": args.batch_size / seconds,
             "peak_memory_bytes": peak_memory(args.device), "num_workers": usable_cores()}
    log(f"reference {name}: training {entry['train_images_per_s']:,.0f} images/s")
    return entry


# ---------------------------------------------------------------------------------------------
# Derived figures, the table, main
# ---------------------------------------------------------------------------------------------

def add_derived(result):
    """Share of the matmul peak, ours/reference, and each dendrite's time cost per FLOP it adds."""
    peak = result["matmul"]["flops_per_s"]
    models = result["models"]
    for entry in models.values():  # a training step counted as 3 forward passes (forward + 2x backward)
        entry["achieved_flops_fraction"] = 3 * entry["forward_flops_per_image"] * entry["train_images_per_s"] / peak
    result["ratios"] = {name: models[name]["train_images_per_s"] / reference["train_images_per_s"]
                        for name, reference in result["reference"].items()}
    base = models["resnet18"]
    result["dendrite_cost"] = {}
    for name, entry in models.items():
        if "dendrites" in entry:
            slowdown = base["train_images_per_s"] / entry["train_images_per_s"]
            flops_ratio = entry["forward_flops_per_image"] / base["forward_flops_per_image"]
            result["dendrite_cost"][name] = {"slowdown": slowdown, "flops_ratio": flops_ratio,
                                             "cost_vs_flops": slowdown / flops_ratio, "goal": DENDRITE_COST_GOAL}


def rate_text(flops_per_s):
    return f"{flops_per_s / 1e12:.1f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.1f} GFLOP/s"


def memory_text(value):
    return "n/a" if value is None else f"{value / 2 ** 30:.2f} GiB"


def print_table(result):
    s, matmul = result["settings"], result["matmul"]
    print(f"\n{result['device']}, torch {result['torch']}, {s['precision']}, "
          f"{'channels_last' if s['channels_last'] else 'NCHW'}, batch {s['batch_size']}; "
          f"median of {s['steps']} steps after {s['warmup_steps']} warm-up")
    print(f"matmul {matmul['dtype']} {matmul['size']}^3: {rate_text(matmul['flops_per_s'])} "
          "(the 'of matmul' column: training FLOP/s, 3x forward, as a share of it)\n")
    print(f"{'model':24s} {'params':>8s} {'GFLOP/img':>9s} {'train img/s':>11s} {'step ms':>9s} "
          f"{'peak mem':>10s} {'eval img/s':>10s} {'of matmul':>9s}")
    for name, e in result["models"].items():
        print(f"{name:24s} {e['params'] / 1e6:7.2f}M {e['forward_flops_per_image'] / 1e9:9.3f} "
              f"{e['train_images_per_s']:11,.0f} {e['train_step_ms_median']:9.1f} "
              f"{memory_text(e['peak_memory_bytes']):>10s} {e['eval_images_per_s']:10,.0f} "
              f"{e['achieved_flops_fraction']:9.1%}")
    for name, e in result["reference"].items():
        print(f"{'reference ' + name:24s} {'':8s} {'':9s} {e['train_images_per_s']:11,.0f} "
              f"{e['train_step_ms_median']:9.1f} {memory_text(e['peak_memory_bytes']):>10s}")
    print("\nreference: DataLoader over PIL images with torchvision transforms "
          f"({result['reference']['resnet18']['num_workers']} workers), fp32, NCHW, plain SGD")
    for name, ratio in result["ratios"].items():
        print(f"ours / reference, {name}: {ratio:.2f}x the images/s")
    for name, cost in result["dendrite_cost"].items():
        print(f"{name}: {cost['slowdown']:.2f}x the time per image for {cost['flops_ratio']:.2f}x the FLOPs: "
              f"cost vs FLOPs {cost['cost_vs_flops']:.2f} (goal <= {cost['goal']})")
    augmentation = result["augmentation"]
    print(f"augmentation and indexing alone: {augmentation['ms_median']:.2f} ms, "
          f"{augmentation['share_of_resnet18_step']:.2%} of a resnet18 step (goal < {augmentation['goal']:.0%})")


def main(argv=None):
    args = parse_args(argv)
    if args.project:
        return project(args.project, args.width)
    torch.manual_seed(0)
    work_dir = tempfile.mkdtemp(prefix="benchmark-")  # the dendrite library writes here
    try:
        settings = parse_settings(["--device", args.device.type, "--batch-size", str(args.batch_size),
                                   "--width", str(args.width)])
        precision = pick_precision(settings.precision, args.device)
        setup = TrainingSetup(settings, args.device, precision)
        # Random CIFAR-sized images, the same for both pipelines: speed does not depend on content.
        images = torch.randint(0, 256, (RESIDENT_BATCHES * args.batch_size, 3, 32, 32), dtype=torch.uint8)
        labels = torch.randint(0, 100, (len(images),))
        result = environment(args.device)
        result["settings"] = {"batch_size": args.batch_size, "eval_batch_size": 2 * args.batch_size,
                              "steps": args.steps, "warmup_steps": args.warmup_steps, "quick": args.quick,
                              "images": len(images), "precision": precision,
                              "channels_last": settings.channels_last, "augment": settings.augment,
                              "cutout": settings.cutout, "compile": settings.compile}
        log(f"benchmark on {result['device']}: {precision}, batch {args.batch_size}, "
            f"{args.warmup_steps} warm-up + {args.steps} timed steps per measurement")
        # The peak in the precision training computes in: bf16 on CUDA, fp32 on the CPU.
        result["matmul"] = matmul_rate(args, setup.autocast_dtype or torch.float32)
        log(f"matmul: {rate_text(result['matmul']['flops_per_s'])} ({result['matmul']['dtype']})")
        result["models"], result["augmentation"] = measure_ours(images, labels, setup, args, work_dir)
        result["reference"] = {name: measure_reference(name, images, labels, args) for name in ("resnet18", "resnet34")}
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    add_derived(result)
    write_json(args.output, result)
    print_table(result)
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
