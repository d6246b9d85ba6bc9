"""The CPU study: what dendrites add beyond equal training and against width (docs/studies.md, "Six seeds").

    python tests/dendrite_study.py OUT                  # the six-seed study as docs/studies.md reports it
    python tests/dendrite_study.py OUT --table-only     # study.md again from the runs in OUT, no training

On generated data where capacity matters (fake_cifar.py --kind teacher: --train training images,
--val more held out for validation, --test test images) with ResNet-18 at --width 0.125 (8-64
channels): per seed a 10-epoch baseline, then per arm one dendrite cycle of --cycle epochs from it
(--max-dendrites 1, --dendrite-min-gain 0: the cycle's best epoch is kept when it beats the
baseline at all), against its control (the same cycle without dendrites), and against the ResNet-18
width frontier: resnet18_w0.875, resnet18 and resnet18_w1.125 trained from scratch for 10 + --cycle
epochs, as long as a dendritic run trains in all (a frontier of 10-epoch baselines would credit the
dendrites with the cycle's extra epochs; the control measures those). The frontier's math is
frontier.py's, every contrast with its interval, power and sign-flip p comparisons.py's, the compute costs.py's.

Writes OUT/study.md: per arm, dendritic - control, dendritic - frontier at equal parameters and
control - frontier (what the warm start and the restarted schedule alone cost or gave), each in test
accuracy points with its 95% t interval over seeds, the exact sign-flip p and the difference these
seeds resolve with 80% power; parameters and multiply-accumulates per dendrite, the dendrites' share
of their layers' output variance after 4 epochs and at the end, seconds per epoch, the epoch each
seed kept; the frontier's members, on it or off it. Every run goes through main.py, one CPU thread
each; finished runs are reused when run again (the study resumes), and every run stays in OUT.
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
from dendritic_experiment.comparisons import Accuracies, frontier_entries
from dendritic_experiment.costs import dendritic_macs, plain_layer_macs
from dendritic_experiment.frontier import family_frontier
from dendritic_experiment.markdown import bounds
from dendritic_experiment.models import dendrite_modules_of

from fake_cifar import write_fake_cifar
from helpers import PACKAGE, as_planned, read_history, script_environment

BASELINE_EPOCHS = 10
COMMON = ["--width", "0.125", "--batch-size", "128", "--cutout", "0", "--epochs", str(BASELINE_EPOCHS),
          "--warmup-epochs", "1", "--max-dendrites", "1", "--dendrite-min-gain", "0"]
PAIRS = ["--dendrite-modules", "layer3.0.conv2,layer3.1.conv2"]  # today's default placement (models.AUTO_DENDRITE_MODULES)
BLOCKS = ["--dendrite-modules", "layer3.0,layer3.1"]  # the same stage's two residual blocks, whole
# The library authors' ResNet recipe (docs/method.md, "The library authors' ResNet recipe"): init 0.1, relu,
# one optimizer (x1, the network's weight decay), and every optimizer after the first at 10 x its learning
# rate: here the cycle's peak 1.0 = 10 x --lr 0.1. Cycle length, one dendrite and the keep rule stay the study's.
AUTHORS = ["--dendrite-lr-multiplier", "1", "--dendrite-weight-decay", "5e-4", "--dendrite-init-scale", "0.1",
           "--dendrite-activation", "relu", "--dendrite-lr", "1.0"]
# arm -> (folder, its flags); each arm has its own control (their cycle learning rates differ)
ARMS = {
    "today's defaults (conv+bn pairs of layer3; x30, tanh, init 1.0)": ("defaults", PAIRS),
    "authors' recipe on whole blocks of layer3 (x1, wd 5e-4, init 0.1, relu, cycle lr 10 x --lr)":
        ("authors", BLOCKS + AUTHORS),
}
FRONTIER = ("resnet18_w0.875", "resnet18", "resnet18_w1.125")  # 140,415 / 182,252 / 229,537 parameters


def main_run(folder, data_dir, flags, log, val):
    """main.py into folder (one CPU thread), its stderr kept in folder/log."""
    os.makedirs(folder, exist_ok=True)
    command = [sys.executable, os.path.join(PACKAGE, "main.py"), "--data-dir", data_dir, "--results-dir", folder,
               "--val-split", str(val), *COMMON, *flags]
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


def study(out, seeds, jobs, cycle, sizes):
    data_dir = os.path.join(out, "data")
    if not os.path.isdir(os.path.join(data_dir, "cifar-100-python")):
        write_fake_cifar(data_dir, kind="teacher", train=sizes.train + sizes.val, test=sizes.test)

    def baseline(seed):
        main_run(os.path.join(out, "baseline", f"seed{seed}"), data_dir, [f"--seeds={seed}", "--experiments", "resnet18"],
                 "main.log", sizes.val)

    def arm(folder, flags, seed):
        path = arm_folder(out, folder, seed)
        if not os.path.exists(os.path.join(path, run_folder("resnet18", seed))):  # the seed's finished baseline
            shutil.copytree(os.path.join(out, "baseline", f"seed{seed}", run_folder("resnet18", seed)),
                            os.path.join(path, run_folder("resnet18", seed)))
        main_run(path, data_dir, [f"--seeds={seed}", "--experiments", "resnet18,resnet18_dendritic",
                                  "--dendrite-epochs", str(cycle), *flags], "main.log", sizes.val)

    def frontier_run(name, seed):
        main_run(frontier_folder(out, name, seed), data_dir,
                 [f"--seeds={seed}", "--experiments", name, "--epochs", str(BASELINE_EPOCHS + cycle)], "main.log",
                 sizes.val)

    jobs_left = []
    for seed in seeds:  # seed by seed, so that a study cut short has whole seeds; in a seed the longest runs first
        jobs_left += [lambda name=name, seed=seed: frontier_run(name, seed) for name in reversed(FRONTIER)]
        jobs_left += [lambda folder=folder, flags=flags, seed=seed: arm(folder, flags, seed)
                      for folder, flags in ARMS.values()]
    with ThreadPoolExecutor(jobs) as pool:  # one process per run, one thread each
        list(pool.map(baseline, seeds))
        list(pool.map(lambda job: job(), jobs_left))
    return report(out, seeds, cycle)


def finished(folder, run, seed):
    path = os.path.join(folder, run_folder(run, seed))
    with open(os.path.join(path, "result.json")) as f:
        return json.load(f), read_history(path)


def contrast_row(arm, contrast, entry, note=""):
    """One contrast over seeds, as the report computes it (comparisons.Accuracies.contrast): its mean and
    95% t interval, the exact sign-flip p (6 seeds or more), the difference these seeds resolve with 80%
    power, and every seed's difference."""
    differences = entry["differences"] if entry else []
    if len(differences) < 2:
        return f"| {arm} | {contrast} | {'n/a' if not differences else f'{differences[0]:+.2f} (one seed)'} | | | |"
    p = entry["power"]
    flip = f"{p['sign_flip_p']:.3f}" if p["sign_flip_p"] is not None else f"n/a ({len(differences)} seeds)"
    return (f"| {arm} | {contrast}{note} | {entry['difference']:+.2f} {bounds(entry)} "
            f"| {flip} | ±{p['resolves']:.2f} | {', '.join(f'{d:+.2f}' for d in differences)} "
            f"(seeds {', '.join(map(str, entry['seeds']))}) |")


def frontier_runs(out, seeds):
    """The frontier's baselines as frontier.py reads runs: name, seed, params, test accuracy."""
    runs = []
    for name in FRONTIER:
        for seed in seeds:
            if not os.path.exists(os.path.join(frontier_folder(out, name, seed), run_folder(name, seed), "result.json")):
                continue  # not finished (yet): the frontier is over the seeds every member has
            result, _ = finished(frontier_folder(out, name, seed), name, seed)
            runs.append(dict(name=name, seed=seed, params=result["params"], test_accuracy=result["test_accuracy"],
                             folder=os.path.join(frontier_folder(out, name, seed), run_folder(name, seed))))
    return as_planned(runs)


def arm_rows(out, name, seeds, frontier):
    """The arm's contrasts over seeds (against its control, and each run against the width frontier)
    and its costs and dendrites."""
    folder, flags = ARMS[name]
    short = folder
    share4, share_end, seconds, kept, runs = [], [], [], [], []
    for seed in seeds:
        dendritic, history = finished(arm_folder(out, folder, seed), "resnet18_dendritic", seed)
        control, control_history = finished(arm_folder(out, folder, seed), "resnet18_continued", seed)
        share4.append(float(history[min(3, len(history) - 1)]["dendrite_share"]))
        share_end.append(float(history[-1]["dendrite_share"]))
        seconds.append((statistics.median(float(r["seconds"]) for r in history[1:]),
                        statistics.median(float(r["seconds"]) for r in control_history[1:])))
        kept.append(f"{dendritic['dendrites']}d@{dendritic['epochs']}")
        for run, result in (("resnet18_dendritic", dendritic), ("resnet18_continued", control)):
            runs.append(dict(name=run, seed=seed, params=result["params"], dendrites=result["dendrites"],
                             test_accuracy=result["test_accuracy"],
                             folder=os.path.join(arm_folder(out, folder, seed), run_folder(run, seed))))
    line = family_frontier(frontier, "resnet18")
    table = frontier + as_planned(runs)
    run_dirs = {(run["name"], run["seed"]): run["folder"] for run in table}
    against_control = Accuracies(table, run_dirs).difference("resnet18_dendritic", "resnet18_continued")
    rows = [contrast_row(short, "dendritic − control", against_control)]
    entries = {entry["run"]: entry for entry in (frontier_entries(table, run_dirs, [line]) if line else [])}
    for run, label in (("resnet18_dendritic", "dendritic − width frontier"), ("resnet18_continued", "control − width frontier")):
        distance = entries.get(run)
        if distance is None:
            rows.append(f"| {short} | {label} | n/a (no frontier yet) | | | |")
            continue
        outside = "".join(f"; seed {seed} outside: {why}" for seed, why in distance["outside"].items())
        rows.append(contrast_row(short, label, distance, outside))
    modules = dendrite_modules_of("resnet18", flags[flags.index("--dendrite-modules") + 1])
    layers = plain_layer_macs("resnet18", 100, 0.125)
    macs_added = dendritic_macs(layers, modules, 1) - sum(layers.values())
    cost = (f"| {short} | {dendritic['params_per_dendrite']:,} | {macs_added / 1e6:.2f}M ({macs_added / sum(layers.values()):.0%}) | "
            f"{statistics.mean(share4):.2%} | {statistics.mean(share_end):.2%} | "
            f"{statistics.mean(s for s, _ in seconds):.1f} / {statistics.mean(c for _, c in seconds):.1f} | {', '.join(kept)} |")
    return rows, cost


def report(out, seeds, cycle):
    frontier = frontier_runs(out, seeds)
    line = family_frontier(frontier, "resnet18")
    contrasts, costs = [], []
    for name in ARMS:
        rows, cost = arm_rows(out, name, seeds, frontier)
        contrasts += rows
        costs.append(cost)
    lines = [f"One dendrite cycle of {cycle} epochs from each seed's {BASELINE_EPOCHS}-epoch baseline (ResNet-18 at "
             f"width 0.125), seeds {', '.join(map(str, seeds))}. Test accuracy differences in points, paired by seed: "
             "mean and 95% t interval over seeds, the exact sign-flip p, and the difference these seeds resolve "
             "(80% power, two-sided 5%, noncentral t). The width frontier: ResNet-18 at 0.875, 1 and 1.125 x the "
             f"channels, trained {BASELINE_EPOCHS + cycle} epochs from scratch (frontier.py: never falling, straight "
             "in log-parameters between its members on it).", "", *(f"- {name}" for name in ARMS), "",
             "| arm | contrast | mean [95% interval] | sign-flip p | resolves | per seed |",
             "|---|---|---:|---:|---:|---|", *contrasts, "",
             "| arm | parameters per dendrite | MACs per image per dendrite | share after 4 epochs | share at the end | "
             "s/epoch dendritic / control | kept (dendrites@epoch) per seed |", "|---|---:|---:|---:|---:|---:|---|",
             *costs, "", "| width frontier run | parameters | test accuracy per seed | mean | on the frontier |",
             "|---|---:|---|---:|---|"]
    for name in FRONTIER:
        members = [run for run in frontier if run["name"] == name]
        if not members:
            lines.append(f"| {name} | not finished | | | |")
            continue
        accuracies = [run["test_accuracy"] for run in members]
        on = ("n/a" if line is None else f"no: {line.off[name]} scored higher with fewer parameters" if name in line.off
              else "yes")
        lines.append(f"| {name} | {members[0]['params']:,} | {', '.join(f'{a:.2f}' for a in accuracies)} "
                     f"(seeds {', '.join(str(run['seed']) for run in members)}) | {statistics.mean(accuracies):.2f} | {on} |")
    baselines = [finished(os.path.join(out, "baseline", f"seed{seed}"), "resnet18", seed)[0] for seed in seeds]
    lines += ["", f"{BASELINE_EPOCHS}-epoch baselines the cycles start from (validation / test): " + ", ".join(
        f"{b['val_accuracy']:.2f} / {b['test_accuracy']:.2f}" for b in baselines) + "."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out", help="a folder for the data, every run and study.md")
    parser.add_argument("--seeds", default="0,1,2,3,4,5", help="comma list of seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one CPU thread each")
    parser.add_argument("--cycle", type=int, default=30, help="epochs of the dendrite cycle (the frontier trains 10 + this many)")
    parser.add_argument("--train", type=int, default=3000, help="training images generated")
    parser.add_argument("--val", type=int, default=4000, help="validation images generated (every decision uses them)")
    parser.add_argument("--test", type=int, default=10000, help="test images generated (read once per run)")
    parser.add_argument("--table-only", action="store_true", help="recompute study.md from the runs in OUT, train nothing")
    args = parser.parse_args()
    out, seeds = os.path.abspath(args.out), [int(seed) for seed in args.seeds.split(",")]
    print(report(out, seeds, args.cycle) if args.table_only else study(out, seeds, args.jobs, args.cycle, args))
