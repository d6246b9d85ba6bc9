"""The CPU study: is a dendrite worth its parameters? (docs/studies.md, "Is a dendrite worth its parameters?")

    python tests/dendrite_study.py OUT [--seeds 0,1,2] [--jobs 2] [--cycle 30]
    python tests/dendrite_study.py OUT --table-only     # the table again from the runs in OUT

On generated data where capacity matters (fake_cifar.py --kind teacher: 4,000 training images,
1,000 of them held out for validation, 1,000 test; fewer than the earlier study's 7,000, so that
3 seeds at full cycle length fit in about 45 minutes of a shared 2-core machine) with ResNet-18 at
--width 0.125 (8-64 channels): per seed a 10-epoch baseline, then per arm one dendrite cycle of --cycle epochs from it
(--max-dendrites 1, --dendrite-min-gain 0: the cycle's best epoch is kept when it beats the
baseline at all), against its control (the same cycle without dendrites; arms with the same
cycle learning rate share one), and against the ResNet-18 width frontier: resnet18_w0.875, resnet18
and resnet18_w1.125 trained from scratch for 10 + --cycle epochs, as long as the dendritic run
trained in all (a frontier of 10-epoch baselines would credit the dendrites with the cycle's extra
epochs; the control measures those). The frontier's math is frontier.py's, compute costs.py's.

Writes OUT/study.md: per arm, dendritic - control, dendritic - frontier at equal parameters and control -
frontier (what the warm start and the restarted schedule alone cost or gave; test accuracy, mean and
95% t interval over seeds; a frontier run not finished yet is left out and said so), parameters and multiply-accumulates per image that one
dendrite adds, the dendrites' share of their layers' output variance after 4 epochs and at the end,
seconds per epoch. Every run goes through main.py, one CPU thread each; finished runs are reused
when run again, and every run stays in OUT (--table-only recomputes the table without training).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as python tests/dendrite_study.py
from dendritic_experiment.costs import dendritic_macs, plain_layer_macs
from dendritic_experiment.frontier import distance_to_frontier
from dendritic_experiment.intervals import seed_interval
from dendritic_experiment.models import dendrite_modules_of

from fake_cifar import write_fake_cifar
from helpers import PACKAGE, read_history, script_environment

DATA = dict(train=4000, test=1000)
BASELINE_EPOCHS = 10
COMMON = ["--width", "0.125", "--val-split", "1000", "--batch-size", "128", "--cutout", "0",
          "--epochs", str(BASELINE_EPOCHS), "--warmup-epochs", "1", "--max-dendrites", "1", "--dendrite-min-gain", "0"]
PAIRS = ["--dendrite-modules", "layer3.0.conv2,layer3.1.conv2"]  # today's default placement (models.AUTO_DENDRITE_MODULES)
BLOCKS = ["--dendrite-modules", "layer3.0,layer3.1"]  # the same stage's two residual blocks, whole
# The library's own values for what this project changes (PAI_NOTES; perforatedai 3.2.9): no separate
# dendrite learning rate or weight decay (one optimizer over all parameters: x1 and the network's 5e-4),
# candidate_weight_initialization_multiplier 0.01, pai_forward_function sigmoid.
LIBRARY = ["--dendrite-lr-multiplier", "1", "--dendrite-weight-decay", "5e-4", "--dendrite-init-scale", "0.01",
           "--dendrite-activation", "sigmoid"]
# The library authors' ResNet recipe (README, "The library authors' ResNet recipe"): init 0.1, relu, one
# optimizer (x1, the network's weight decay), and every optimizer after the first at 10 x its learning rate:
# here the cycle's peak 1.0 = 10 x --lr 0.1. Cycle length, one dendrite and the keep rule stay the study's.
AUTHORS = ["--dendrite-lr-multiplier", "1", "--dendrite-weight-decay", "5e-4", "--dendrite-init-scale", "0.1",
           "--dendrite-activation", "relu", "--dendrite-lr", "1.0"]
# arm -> (folder, its flags, the arm whose control it is compared with: the one with the same cycle schedule)
ARMS = {
    "today's defaults (conv+bn pairs of layer3; x30, tanh, init 1.0)": ("defaults", PAIRS, "defaults"),
    "whole blocks of layer3, today's settings": ("blocks", BLOCKS, "defaults"),
    "authors' recipe on whole blocks of layer3 (x1, wd 5e-4, init 0.1, relu, cycle lr 10 x --lr)":
        ("authors", BLOCKS + AUTHORS, "authors"),
    "library's defaults (conv+bn pairs; x1, wd 5e-4, init 0.01, sigmoid)": ("library", PAIRS + LIBRARY, "defaults"),
}
FRONTIER = ("resnet18_w0.875", "resnet18", "resnet18_w1.125")  # 140,415 / 182,252 / 229,537 parameters


def main_run(folder, data_dir, flags, log):
    """main.py into folder (one CPU thread), its stderr kept in folder/log."""
    os.makedirs(folder, exist_ok=True)
    command = [sys.executable, os.path.join(PACKAGE, "main.py"), "--data-dir", data_dir, "--results-dir", folder,
               *COMMON, *flags]
    with open(os.path.join(folder, log), "w") as stderr:
        finished = subprocess.run(command, env=dict(script_environment(), OMP_NUM_THREADS="1"), cwd=folder,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    if finished.returncode:
        sys.exit(f"failed: {' '.join(command)} (see {folder}/{log})")


def arm_folder(out, folder, seed):
    return os.path.join(out, "arms", folder, f"seed{seed}")


def frontier_folder(out, name, seed):
    return os.path.join(out, "frontier", name, f"seed{seed}")


def run_folder(run, seed):
    return run if seed == 0 else f"{run}_seed{seed}"


def study(out, seeds, jobs, cycle):
    data_dir = os.path.join(out, "data")
    if not os.path.isdir(os.path.join(data_dir, "cifar-100-python")):
        write_fake_cifar(data_dir, kind="teacher", **DATA)

    def baseline(seed):
        main_run(os.path.join(out, "baseline", f"seed{seed}"), data_dir, [f"--seeds={seed}", "--experiments", "resnet18"],
                 "main.log")

    def arm(folder, flags, own_control, seed):
        path = arm_folder(out, folder, seed)
        if not os.path.exists(os.path.join(path, run_folder("resnet18", seed))):  # the seed's finished baseline
            shutil.copytree(os.path.join(out, "baseline", f"seed{seed}", run_folder("resnet18", seed)),
                            os.path.join(path, run_folder("resnet18", seed)))
        main_run(path, data_dir, [f"--seeds={seed}", "--experiments", "resnet18,resnet18_dendritic",
                                  "--control" if own_control else "--no-control", "--dendrite-epochs", str(cycle),
                                  *flags], "main.log")

    def frontier_run(name, seed):
        main_run(frontier_folder(out, name, seed), data_dir,
                 [f"--seeds={seed}", "--experiments", name, "--epochs", str(BASELINE_EPOCHS + cycle)], "main.log")

    jobs_left = []
    for seed in seeds:  # seed by seed, so that a study cut short has whole seeds; in a seed the longest runs first
        jobs_left += [lambda name=name, seed=seed: frontier_run(name, seed) for name in reversed(FRONTIER)]
        jobs_left += [lambda arm_spec=arm_spec, seed=seed: arm(arm_spec[0], arm_spec[1], arm_spec[0] == arm_spec[2], seed)
                      for arm_spec in ARMS.values()]
    with ThreadPoolExecutor(jobs) as pool:  # one process per run, one thread each
        list(pool.map(baseline, seeds))
        list(pool.map(lambda job: job(), jobs_left))
    return report(out, seeds, cycle)


def finished(folder, run, seed):
    path = os.path.join(folder, run_folder(run, seed))
    with open(os.path.join(path, "result.json")) as f:
        return json.load(f), read_history(path)


def interval_text(differences):
    if len(differences) < 2:
        return f"{differences[0]:+.2f} (one seed)" if differences else "n/a"
    mean, low, high = seed_interval(differences)
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def frontier_runs(out, seeds):
    """The frontier's baselines as frontier.py reads runs: name, seed, params, test accuracy."""
    runs = []
    for name in FRONTIER:
        for seed in seeds:
            if not os.path.exists(os.path.join(frontier_folder(out, name, seed), run_folder(name, seed), "result.json")):
                continue  # not finished (yet): the frontier is drawn from the members there are, and the table says so
            result, _ = finished(frontier_folder(out, name, seed), name, seed)
            runs.append(dict(name=name, seed=seed, params=result["params"], test_accuracy=result["test_accuracy"]))
    return runs


def frontier_text(runs, run_name, seeds):
    """run_name's distance to the width frontier at its own parameters (frontier.py), as a table cell."""
    distance = distance_to_frontier(runs, run_name)
    text = interval_text([distance["per_seed"][seed] for seed in distance["seeds"]]) if distance else "n/a"
    outside = seeds - len(distance["seeds"]) if distance else seeds
    return text + (f" ({outside} seed(s) outside the frontier)" if outside else "")


def arm_row(out, name, seeds, frontier):
    """The arm's figures over seeds: against its control, and against the width frontier."""
    folder, flags, control_folder = ARMS[name]
    test, share4, share_end, seconds, kept, dendritic_runs = [], [], [], [], [], []
    for seed in seeds:
        dendritic, history = finished(arm_folder(out, folder, seed), "resnet18_dendritic", seed)
        control, control_history = finished(arm_folder(out, control_folder, seed), "resnet18_continued", seed)
        test.append(dendritic["test_accuracy"] - control["test_accuracy"])
        share4.append(float(history[min(3, len(history) - 1)]["dendrite_share"]))
        share_end.append(float(history[-1]["dendrite_share"]))
        seconds.append((statistics.median(float(r["seconds"]) for r in history[1:]),
                        statistics.median(float(r["seconds"]) for r in control_history[1:])))
        kept.append(f"{dendritic['dendrites']}d@{dendritic['epochs']}")
        dendritic_runs.append(dict(name="resnet18_dendritic", seed=seed, params=dendritic["params"],
                                   test_accuracy=dendritic["test_accuracy"]))
        dendritic_runs.append(dict(name="resnet18_continued", seed=seed, params=control["params"],
                                   test_accuracy=control["test_accuracy"]))
    to_frontier, control_to_frontier = (frontier_text(frontier + dendritic_runs, run, len(seeds))
                                        for run in ("resnet18_dendritic", "resnet18_continued"))
    modules = dendrite_modules_of("resnet18", flags[flags.index("--dendrite-modules") + 1])
    layers = plain_layer_macs("resnet18", 100, 0.125)
    macs_added = dendritic_macs(layers, modules, 1) - sum(layers.values())
    return (f"| {name} | {interval_text(test)} | {to_frontier} | {control_to_frontier} | {dendritic['params_per_dendrite']:,} | "
            f"{macs_added / 1e6:.2f}M ({macs_added / sum(layers.values()):.0%}) | {statistics.mean(share4):.2%} | "
            f"{statistics.mean(share_end):.2%} | {statistics.mean(s for s, _ in seconds):.1f} / "
            f"{statistics.mean(c for _, c in seconds):.1f} | {', '.join(kept)} |")


def report(out, seeds, cycle):
    frontier = frontier_runs(out, seeds)
    lines = [f"One dendrite cycle of {cycle} epochs from each seed's {BASELINE_EPOCHS}-epoch baseline (ResNet-18 at "
             f"width 0.125), seeds {', '.join(map(str, seeds))}. Test accuracy differences in points, mean and 95% t "
             "interval over seeds, paired by seed; the frontier: ResNet-18 at 0.875, 1 and 1.125 x the channels, "
             f"trained {BASELINE_EPOCHS + cycle} epochs from scratch, interpolated in log(parameters) at the "
             "dendritic run's own parameter count (frontier.py).", "",
             "| arm | dendritic - control | dendritic - width frontier at equal parameters | control - width frontier "
             "(the warm start and restarted schedule alone) | parameters per dendrite | "
             "MACs per image per dendrite | share after 4 epochs | share at the end | s/epoch dendritic / control | "
             "kept (dendrites@epoch) per seed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += [arm_row(out, name, seeds, frontier) for name in ARMS]
    lines += ["", "| width frontier run | parameters | test accuracy per seed | mean |", "|---|---:|---|---:|"]
    for name in FRONTIER:
        members = [run for run in frontier if run["name"] == name]
        if len(members) < len(seeds):
            lines.append(f"| {name} | not finished for every seed: left out of the frontier where missing | | |")
            if not members:
                continue
        accuracies = [run["test_accuracy"] for run in members]
        lines.append(f"| {name} | {members[0]['params']:,} | {', '.join(f'{a:.2f}' for a in accuracies)} | "
                     f"{statistics.mean(accuracies):.2f} |")
    baselines = [finished(os.path.join(out, "baseline", f"seed{seed}"), "resnet18", seed)[0] for seed in seeds]
    lines += ["", f"{BASELINE_EPOCHS}-epoch baselines the cycles start from (validation / test): " + ", ".join(
        f"{b['val_accuracy']:.2f} / {b['test_accuracy']:.2f}" for b in baselines) + "."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="a folder for the data, every run and study.md")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one CPU thread each")
    parser.add_argument("--cycle", type=int, default=30, help="epochs of the dendrite cycle (the frontier trains 10 + this many)")
    parser.add_argument("--table-only", action="store_true", help="recompute study.md from the runs in OUT, train nothing")
    args = parser.parse_args()
    out, seeds = os.path.abspath(args.out), [int(seed) for seed in args.seeds.split(",")]
    print(report(out, seeds, args.cycle) if args.table_only else study(out, seeds, args.jobs, args.cycle))
