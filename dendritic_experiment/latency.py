"""CPU inference latency of each finished run's model, timed side by side for summary.md (how it is measured and what
it found: docs/performance.md, "Latency and export"; tests/latency_table.py times exported models). Models are timed
interleaved, one forward of each in turn, so that a machine busy with other work slows all alike and their ratios
hold: on a shared machine, models timed one after the other compared 41% apart where interleaved timings gave 18%."""
import os
import statistics
import sys
import time

import torch

from dendritic_experiment import plain_model
from dendritic_experiment.comparisons import described
from dendritic_experiment.costs import CIFAR_IMAGE
from dendritic_experiment.utils import read_json, write_json


def measure_latency(models, batch_sizes=(1, 64), threads=1, seconds=1.0, warmup_rounds=2, min_rounds=5,
                    max_rounds=200):
    """{name: {batch size: median ms of one forward}} of models ({name: nn.Module or callable}) on the CPU, in eval
    mode, without gradients, on `threads` threads. Per batch size: warmup_rounds untimed rounds (a shape's first call
    builds its kernels), then rounds of one forward of each model until `seconds` have passed and min_rounds are done,
    or max_rounds are; what that costs: docs/performance.md, "Latency and export"."""
    for model in models.values():
        to_eval_mode(model)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            by_batch = {batch: time_batch(models, batch, seconds, warmup_rounds, min_rounds, max_rounds)
                        for batch in batch_sizes}
    finally:
        torch.set_num_threads(previous_threads)
    return {name: {batch: times[name] for batch, times in by_batch.items()} for name in models}


def time_batch(models, batch, seconds, warmup_rounds, min_rounds, max_rounds):
    """{name: median milliseconds} at one batch size."""
    names = list(models)
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


# The experiment's runs: each one's model timed beside the others, cached while none changes.

RUN_BATCH_SIZES = (1, 32)  # one image, as a device classifies a camera frame, and a batch for throughput
RUN_THREADS = 1
CACHE = "latency.json"  # in the results folder: the table and what it was measured for


def run_latencies(runs, run_dirs, results_dir):
    """{run name: {batch size as text: median ms}} of each run's model (its first seed's, as plain_model.load
    builds it) on this CPU, each architecture timed once, side by side. Reused from results_dir/latency.json
    while architectures, batch sizes, threads, CPU and torch are the same (weights do not change the time);
    else all are measured anew together, so that the ratios hold (seconds for the default plan's models)."""
    first = {name: plain_model.read_result(run_dirs[name, run["seed"]]) for name, run in described(runs).items()}
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


def cpu_name():
    """The processor's model name (Linux's /proc/cpuinfo, as lscpu shows it), or 'CPU unknown'."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU unknown"
