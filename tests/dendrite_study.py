"""The CPU study behind the dendrite defaults (README, "Do the dendrites contribute?").

    python tests/dendrite_study.py OUT [--seeds 0,1] [--jobs 2]

On generated data where capacity matters (fake_cifar.py --kind teacher: 7,000 training images,
2,000 of them held out for validation, 1,000 test), with the tiny ResNet-18 of tiny_models.py
(widths 8-64: ResNet-18 itself trains at about 30 images/s on 2 CPU cores):
1. capacity: the baseline and one twice as wide, 10 epochs each, three seeds: does capacity show?
2. settings: from each seed's baseline, one dendrite cycle of 4 epochs per setting of the dendrite
   learning-rate multiplier (1, 10, 30), the dendrite weight decay (the global 5e-4, or 0), the
   initialisation scale (the library's 0.01, 0.1, 1) and the activation (the library's sigmoid, tanh);
   also the control once per seed.
Prints markdown tables of validation accuracy and of what the kept dendrites contribute, and writes
them to OUT/study.md. Every run goes through main.py; finished runs are reused when run again.
"""
import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from fake_cifar import write_fake_cifar
from helpers import main_command, read_history, script_environment

DATA = dict(train=7000, test=1000)
COMMON = ["--val-split", "2000", "--batch-size", "128", "--cutout", "0", "--experiments"]
BASELINE = ["--epochs", "10", "--warmup-epochs", "1"]
CYCLE = ["--dendrite-epochs", "4", "--max-dendrites", "1"]
WIDTHS = {"baseline": "8,16,32,64", "twice as wide": "16,32,64,128"}
# (learning-rate multiplier, weight decay, init scale, activation): the library's defaults first.
SETTINGS = [dict(dendrite_lr_multiplier=multiplier, dendrite_weight_decay=decay, dendrite_init_scale=scale,
                 dendrite_activation=activation) for multiplier, decay, scale, activation in (
    (1, 5e-4, 0.01, "sigmoid"), (10, 5e-4, 0.01, "sigmoid"), (30, 5e-4, 0.01, "sigmoid"), (30, 0.0, 0.01, "sigmoid"),
    (30, 0.0, 0.1, "sigmoid"), (30, 0.0, 1.0, "sigmoid"), (10, 0.0, 1.0, "tanh"), (30, 0.0, 1.0, "tanh"))]


def main_run(out, data_dir, results_dir, runs, flags, widths=WIDTHS["baseline"]):
    """main.py (tiny models, one thread) into results_dir; its stderr kept there as main.log."""
    os.makedirs(results_dir, exist_ok=True)
    command = main_command(["--data-dir", data_dir, "--results-dir", results_dir, *COMMON, runs, *BASELINE, *flags])
    environment = dict(script_environment(), TINY_WIDTHS=widths, OMP_NUM_THREADS="1")
    with open(os.path.join(results_dir, "main.log"), "w") as log:
        finished = subprocess.run(command, cwd=out, env=environment, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=log)
    if finished.returncode:
        sys.exit(f"failed: {' '.join(command)} (see {results_dir}/main.log)")


def flags_of(setting):
    return [f"--{name.replace('_', '-')}={value}" for name, value in setting.items()]


def label(setting):
    decay = "global" if setting["dendrite_weight_decay"] else "0"
    return (f"x{setting['dendrite_lr_multiplier']}, weight decay {decay}, init {setting['dendrite_init_scale']}, "
            f"{setting['dendrite_activation']}")


def study(out, seeds, jobs):
    data_dir = os.path.join(out, "data")
    if not os.path.isdir(os.path.join(data_dir, "cifar-100-python")):
        write_fake_cifar(data_dir, kind="teacher", **DATA)

    def capacity(item):
        name, seed = item
        main_run(out, data_dir, folder(out, "capacity", name, seed), "resnet18", [f"--seeds={seed}"], WIDTHS[name])

    def dendritic(item):
        index, seed = item
        results = folder(out, "settings", index, seed)
        baseline = run_folder("resnet18", seed)
        if not os.path.exists(os.path.join(results, baseline)):  # the same finished baseline for every setting
            shutil.copytree(os.path.join(folder(out, "capacity", "baseline", seed), baseline),
                            os.path.join(results, baseline))
        control = ["--control"] if index == 0 else ["--no-control"]
        main_run(out, data_dir, results, "resnet18,resnet18_dendritic",
                 [f"--seeds={seed}", *control, *CYCLE, *flags_of(SETTINGS[index])])

    with ThreadPoolExecutor(jobs) as pool:  # one process per run (one results folder each), one thread each
        list(pool.map(capacity, itertools.product(WIDTHS, (0, 1, 2))))
        list(pool.map(dendritic, itertools.product(range(len(SETTINGS)), seeds)))
    return report(out, seeds)


def folder(out, part, key, seed):
    return os.path.join(out, part, str(key).replace(" ", "_"), f"seed{seed}")


def run_folder(run, seed):
    return run if seed == 0 else f"{run}_seed{seed}"


def result(results_dir, run, seed):
    path = os.path.join(results_dir, run_folder(run, seed))
    with open(os.path.join(path, "result.json")) as f:
        return json.load(f), read_history(path)


def report(out, seeds):
    lines = ["| network | params | validation accuracy per seed (%) | mean |", "|---|---:|---|---:|"]
    for name in WIDTHS:
        runs = [result(folder(out, "capacity", name, seed), "resnet18", seed)[0] for seed in (0, 1, 2)]
        accuracies = [run["val_accuracy"] for run in runs]
        lines.append(f"| {name} | {runs[0]['params']:,} | {', '.join(f'{a:.2f}' for a in accuracies)} | "
                     f"{statistics.mean(accuracies):.2f} |")
    lines += ["", "| dendrite setting (lr multiplier, weight decay, init, activation) | baseline val. | best val. in the "
              "cycle | dendrite kept | share of layer output variance at the cycle's end | mean abs. "
              "dendrites_to_top |", "|---|---:|---:|---:|---:|---:|"]
    for index, setting in enumerate(SETTINGS):
        cells = []
        for seed in seeds:
            baseline, _ = result(folder(out, "settings", index, seed), "resnet18", seed)
            run, history = result(folder(out, "settings", index, seed), "resnet18_dendritic", seed)
            cells.append((baseline["val_accuracy"], max(float(row["val_accuracy"]) for row in history),
                          run["dendrites"], float(history[-1]["dendrite_share"]), float(history[-1]["dendrite_scale"])))
        lines.append(f"| {label(setting)} | " + " | ".join(
            ", ".join(fmt.format(value) for value in column)
            for fmt, column in zip(("{:.2f}", "{:.2f}", "{}", "{:.4%}", "{:.4f}"), zip(*cells))) + " |")
    controls = [max(float(row["val_accuracy"]) for row in result(folder(out, "settings", 0, seed),
                                                                "resnet18_continued", seed)[1]) for seed in seeds]
    lines += ["", "Control (the baseline trained on for the same cycle, no dendrites), best validation per seed: "
              f"{', '.join(f'{a:.2f}' for a in controls)}."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="a folder for the data, every run and study.md")
    parser.add_argument("--seeds", default="0,1", help="seeds of the settings study (the capacity check uses 0,1,2)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one CPU thread each")
    args = parser.parse_args()
    print(study(os.path.abspath(args.out), [int(seed) for seed in args.seeds.split(",")], args.jobs))
