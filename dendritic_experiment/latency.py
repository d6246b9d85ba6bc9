"""CPU inference latency of several models, timed side by side: what a deployed model costs
(docs/performance.md, "Latency and export", gives the table this prints and how it was measured).

    python dendritic_experiment/latency.py      # exported ResNet-18, with and without dendrites, and the library's

Models are timed interleaved, one forward of each in turn, so that a machine busy with other work
slows all alike and their ratios hold: on a shared machine, models timed one after the other compared
41% apart where interleaved timings gave 18%.
"""
import argparse
import io
import os
import statistics
import sys
import tempfile
import time

import torch

if __name__ == "__main__" and not __package__:  # run as a file: import the package, not its files one by one
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dendritic_experiment.costs import CIFAR_IMAGE  # noqa: E402


def measure_latency(models, batch_sizes=(1, 64), threads=1, seconds=1.0, warmup_rounds=2, min_rounds=5,
                    max_rounds=200):
    """{name: {batch size: median ms of one forward}} of models ({name: nn.Module or callable}) on the CPU,
    in eval mode, without gradients, on `threads` threads. Per batch size: warmup_rounds untimed rounds (a
    shape's first call builds its kernels), then rounds of one forward of each model until `seconds` have
    passed and min_rounds are done, or max_rounds are; what that costs: docs/performance.md,
    "Latency and export"."""
    names = list(models)
    for model in models.values():
        to_eval_mode(model)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            return transpose({batch: time_batch(models, names, batch, seconds, warmup_rounds, min_rounds, max_rounds)
                              for batch in batch_sizes})
    finally:
        torch.set_num_threads(previous_threads)


def time_batch(models, names, batch, seconds, warmup_rounds, min_rounds, max_rounds):
    """{name: median milliseconds} at one batch size."""
    images = torch.randn(batch, *CIFAR_IMAGE, generator=torch.Generator().manual_seed(0))
    for _ in range(warmup_rounds):
        for name in names:
            models[name](images)
    times = {name: [] for name in names}
    start, rounds = time.perf_counter(), 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < seconds):
        first = rounds % len(names)  # each model in turn goes first: none always follows the same one
        for name in names[first:] + names[:first]:
            began = time.perf_counter()
            models[name](images)
            times[name].append(time.perf_counter() - began)
        rounds += 1
    return {name: 1000 * statistics.median(calls) for name, calls in times.items()}


def to_eval_mode(model):
    """model.eval() where it has one; an exported program's module is in eval mode already and refuses it."""
    try:
        model.eval()
    except (AttributeError, NotImplementedError):
        pass


def transpose(by_batch):
    """{batch: {name: ms}} -> {name: {batch: ms}}."""
    names = next(iter(by_batch.values()), {})
    return {name: {batch: times[name] for batch, times in by_batch.items()} for name in names}


# ---------------------------------------------------------------------------------------------
# The experiment's runs: each one's model timed beside the others, cached while none changes.
# ---------------------------------------------------------------------------------------------

RUN_BATCH_SIZES = (1, 32)  # one image, as a device classifies a camera frame, and a batch for throughput
RUN_THREADS = 1
CACHE = "latency.json"  # in the results folder: the table and what it was measured for


def run_latencies(runs, run_dirs, results_dir):
    """{run name: {batch size as text: median ms}} of each run's model (its first seed's, as plain_model.load
    builds it) on this CPU, each architecture timed once, side by side. Reused from results_dir/latency.json
    while architectures, batch sizes, threads, CPU and torch are the same (weights do not change the time);
    else all are measured anew together, so that the ratios hold (seconds for the default plan's models)."""
    from dendritic_experiment import plain_model
    from dendritic_experiment.utils import read_json, write_json

    first = {}  # name: the result.json of its first seed
    for run in runs:
        if run["name"] not in first:
            first[run["name"]] = plain_model.read_result(run_dirs[run["name"], run["seed"]])
    architectures = {name: architecture(result) for name, result in first.items()}
    key = dict(cpu=cpu_name(), torch=torch.__version__, threads=RUN_THREADS, batch_sizes=list(RUN_BATCH_SIZES),
               architectures=architectures)
    cache_path = os.path.join(results_dir, CACHE)
    cached = read_json(cache_path) or {}
    if cached.get("key") == key:
        return cached["latency_ms"]
    started = time.perf_counter()
    timed = {}  # one model per architecture: its runs share its times
    for name, result in first.items():
        if architectures[name] not in timed:
            timed[architectures[name]] = plain_model.load(run_dirs[name, result["seed"]], result)
    by_architecture = measure_latency(timed, RUN_BATCH_SIZES, RUN_THREADS, seconds=0.5, warmup_rounds=1, min_rounds=3)
    latency = {name: {str(batch): ms for batch, ms in by_architecture[arch].items()}
               for name, arch in architectures.items()}
    write_json(cache_path, dict(key=key, latency_ms=latency))
    print(f"latency: {len(timed)} model(s) timed side by side on the CPU in {time.perf_counter() - started:.1f} s "
          f"(batch {' and '.join(map(str, RUN_BATCH_SIZES))}, {RUN_THREADS} thread)", file=sys.stderr)
    return latency


def architecture(result):
    """What a finished run's forward pass computes, as text (weights and seed do not change its time)."""
    settings = result["settings"]
    parts = [result["model"], f"width {settings.get('width')}", f"{len(result['classes'])} classes"]
    if result.get("dendrites"):
        parts += [settings["dendrite_modules"], f"{result['dendrites']} dendrites", settings["dendrite_activation"]]
    return ", ".join(map(str, parts))


# ---------------------------------------------------------------------------------------------
# The entry point: exported ResNets with and without dendrites, and the library's own model.
# ---------------------------------------------------------------------------------------------

def library_model(model_name, module_names, dendrites, activation="tanh", width=1.0, num_classes=100, seed=0):
    """The closed DendriteTracker (its .model, .checkpoint_state(), .parameter_count() stay usable) of perforatedai's
    model_name with `dendrites` dendrites on each of module_names, grown as a run grows them. Weights are random,
    each dendrite's output scale and dendrite-to-dendrite weight from N(0, 1) so that every term of the forward
    counts. The model's activation is the library's process-wide one: this model's until another is set."""
    from dendritic_experiment.dendrites import DendriteTracker, wrapped_modules
    from dendritic_experiment.models import build_model
    from dendritic_experiment.settings import parse_settings

    torch.manual_seed(seed)
    settings = parse_settings(["--experiments", f"{model_name}_dendritic", "--dendrite-modules", ",".join(module_names),
                               "--max-dendrites", str(dendrites + 1), "--dendrite-activation", activation,
                               "--width", str(width)])
    images, labels = torch.randn(2, *CIFAR_IMAGE), torch.tensor([0, 1])
    model = build_model(model_name, num_classes, width)
    with tempfile.TemporaryDirectory(prefix="latency-") as run_dir, \
            DendriteTracker(model, module_names, settings, run_dir, "cpu") as tracker:
        for added in range(dendrites + 1):
            # As a run does: an optimizer for the current architecture, the shapes learnt, then a score;
            # each forced switch with a better score keeps the dendrite and adds the next one.
            tracker.setup_optimizer(torch.optim.SGD, dict(lr=0.1), torch.optim.lr_scheduler.LambdaLR,
                                    dict(lr_lambda=lambda epoch: 1.0))
            tracker.learn_shapes(images, labels)
            if added < dendrites:
                if added == 0:
                    tracker.start_from_baseline(50.0, 50.0)
                else:
                    tracker.end_epoch(50.0 + 10 * added, 50.0, 1, force_switch=True)
    if tracker.dendrite_count != dendrites:
        raise RuntimeError(f"the library grew {tracker.dendrite_count} dendrites, not {dendrites}")
    with torch.no_grad():
        for module in wrapped_modules(tracker.model):
            for parameter in [module.dendrites_to_top[-1], *module.dendrite_module.dendrites_to_dendrites]:
                parameter.normal_()
    tracker.model.eval()
    return tracker


def comparison(model_name, module_names, dendrites, activation, batch_sizes, threads, seconds):
    """Rows of the table: each model's parameters, MACs, .pt2 size and latency, exported and not."""
    from dendritic_experiment import costs, plain_model
    from dendritic_experiment.export import export_program
    from dendritic_experiment.models import build_model

    library = library_model(model_name, module_names, dendrites, activation)
    plain = build_model(model_name).eval()
    dendritic = plain_model.dendritic_model(model_name, 100, 1.0, module_names, dendrites, activation)
    dendritic.load_state_dict(plain_model.from_library(library.checkpoint_state()["model"], dendritic, module_names))
    plain_program, dendritic_program = export_program(plain), export_program(dendritic)
    layers = costs.layer_macs(plain)
    plain_macs, dendritic_macs = sum(layers.values()), costs.dendritic_macs(layers, module_names, dendrites)
    # name: (the callable timed, its parameters, MACs per image, bytes of its .pt2)
    models = {
        f"{model_name}, exported": (plain_program.module(), count(plain_program), plain_macs,
                                    program_size(plain_program)),
        "dendritic, exported": (dendritic_program.module(), count(dendritic_program), dendritic_macs,
                                program_size(dendritic_program)),
        "dendritic, perforatedai": (library.model, library.parameter_count(), dendritic_macs, None),
        f"{model_name}, eager": (plain, count(plain), plain_macs, None),
        "dendritic, eager (plain_model)": (dendritic, count(dendritic), dendritic_macs, None),
    }
    latency = measure_latency({name: entry[0] for name, entry in models.items()}, batch_sizes, threads, seconds)
    return [dict(name=name, params=params, macs=macs, size=size, ms=latency[name])
            for name, (_, params, macs, size) in models.items()]


def count(model):
    """Parameters of an nn.Module or an ExportedProgram."""
    return sum(parameter.numel() for parameter in model.parameters())


def program_size(program):
    """Bytes of an ExportedProgram saved with torch.export.save."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return len(buffer.getvalue())


def print_table(rows, model_name, module_names, dendrites, threads):
    baseline = rows[0]
    batches = list(baseline["ms"])
    print(f"{model_name}, dendritic: {dendrites} dendrite(s) on {','.join(module_names)}; random weights; "
          f"{threads} thread(s), interleaved, medians; torch {torch.__version__}; {cpu_name()}, {os.cpu_count()} CPUs")
    print("| model | parameters | MACs | MACs / base | .pt2 MB | "
          + " | ".join(f"batch {b} ms | / base" for b in batches) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|---:|" * len(batches))
    for row in rows:
        size = f"{row['size'] / 1e6:.1f}" if row["size"] else "-"
        cells = [f"{row['ms'][b]:.2f} | {row['ms'][b] / baseline['ms'][b]:.3f}" for b in batches]
        print(f"| {row['name']} | {row['params']:,} | {row['macs'] / 1e6:.1f}M | "
              f"{row['macs'] / baseline['macs']:.3f} | {size} | " + " | ".join(cells) + " |")
    exported = next(row for row in rows if row["name"] == "dendritic, exported")
    for b in batches:
        ratio, bound = exported["ms"][b] / baseline["ms"][b], 1.2 * exported["macs"] / baseline["macs"]
        print(f"batch {b}: exported dendritic / exported {model_name} = {ratio:.3f}, "
              f"bound 1.2 x MAC ratio = {bound:.3f}: {'within' if ratio <= bound else 'OVER'}")


def cpu_name():
    """The processor's model name (Linux's /proc/cpuinfo, as lscpu shows it), or 'CPU unknown'."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU unknown"


def main(argv=None):
    from dendritic_experiment.models import dendrite_modules_of

    parser = argparse.ArgumentParser(prog="python dendritic_experiment/latency.py", description=(
        "Time, interleaved on the CPU, a model exported with torch.export, the same model with dendrites "
        "(rebuilt in plain PyTorch, then exported), perforatedai's own dendritic model, and both plain "
        "models in eager mode, all at full width with random weights; print their parameters, "
        "multiply-accumulates, .pt2 sizes and median latencies as a table."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="resnet18, resnet34, resnet50 (100 classes)")
    parser.add_argument("--dendrite-modules", default="auto", help="as config.py's dendrite_modules")
    parser.add_argument("--dendrites", type=int, default=1, help="dendrites on each of those modules")
    parser.add_argument("--dendrite-activation", default="tanh", help="tanh, sigmoid or relu")
    parser.add_argument("--batch-sizes", default="1", help="comma list")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per batch size, all models")
    args = parser.parse_args(argv)
    module_names = dendrite_modules_of(args.model, args.dendrite_modules)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = comparison(args.model, module_names, args.dendrites, args.dendrite_activation, batch_sizes, args.threads,
                      args.seconds)
    print_table(rows, args.model, module_names, args.dendrites, args.threads)


if __name__ == "__main__":
    main()
