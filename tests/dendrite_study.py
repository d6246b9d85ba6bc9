"""The CPU study of dendrites at full cycle length (docs/studies.md, "Do dendrites help beyond equal training?").

    python tests/dendrite_study.py OUT [--seeds 0,1,2] [--jobs 2] [--cycle 30]

On generated data where capacity matters (fake_cifar.py --kind teacher: 7,000 training images,
2,000 of them held out for validation, 1,000 test) with ResNet-18 at --width 0.125 (8-64
channels): per seed a 10-epoch baseline, then per arm one dendrite cycle of --cycle epochs from it
(--max-dendrites 1, --dendrite-min-gain 0: the cycle's best epoch is kept when it beats the
baseline at all), against the control, which trains the same cycle without dendrites. The
control is the same for every arm that leaves the control's procedure alone (all but the warm-up
arm, whose control is frozen for the same epochs), so it is trained once per seed for those.
Prints a markdown table per arm (dendritic - control with a t interval over the seeds, on the test
and validation sets; the dendrites' share of their layers' output variance after 4 epochs and at
the cycle's end; parameters added; seconds per epoch) and writes it to OUT/study.md. Every run goes
through main.py, one CPU thread each; finished runs are reused when run again.
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
from dendritic_experiment.intervals import seed_interval

from fake_cifar import write_fake_cifar
from helpers import PACKAGE, read_history, script_environment

DATA = dict(train=7000, test=1000)
COMMON = ["--width", "0.125", "--val-split", "2000", "--batch-size", "128", "--cutout", "0", "--epochs", "10",
          "--warmup-epochs", "1", "--max-dendrites", "1", "--dendrite-min-gain", "0"]
DEFAULTS = "layer3.0.conv2,layer3.1.conv2"
# arm -> (its flags, whether it has a control of its own)
ARMS = {
    "defaults (x30, tanh, init 1.0, layer3)": ([], True),
    "x100": (["--dendrite-lr-multiplier", "100"], False),
    "x300": (["--dendrite-lr-multiplier", "300"], False),
    "library's ImageNet recipe (relu, init 0.1)": (["--dendrite-activation", "relu", "--dendrite-init-scale", "0.1"],
                                                   False),
    "layer4's last block": (["--dendrite-modules", "layer4.1.conv1,layer4.1.conv2"], False),
    "classifier (fc)": (["--dendrite-modules", "fc"], False),
    "warm-up of 3 epochs": (["--dendrite-warmup-epochs", "3"], True),
}


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


def arm_folder(out, arm, seed):
    return os.path.join(out, "arms", arm.split(" (")[0].replace(" ", "_").replace("'", ""), f"seed{seed}")


def run_folder(run, seed):
    return run if seed == 0 else f"{run}_seed{seed}"


def study(out, seeds, jobs, cycle):
    data_dir = os.path.join(out, "data")
    if not os.path.isdir(os.path.join(data_dir, "cifar-100-python")):
        write_fake_cifar(data_dir, kind="teacher", **DATA)

    def baseline(seed):
        main_run(os.path.join(out, "baseline", f"seed{seed}"), data_dir, [f"--seeds={seed}", "--experiments", "resnet18"],
                 "main.log")

    def arm(item):
        name, seed = item
        flags, own_control = ARMS[name]
        folder = arm_folder(out, name, seed)
        if not os.path.exists(os.path.join(folder, run_folder("resnet18", seed))):  # the seed's finished baseline
            shutil.copytree(os.path.join(out, "baseline", f"seed{seed}", run_folder("resnet18", seed)),
                            os.path.join(folder, run_folder("resnet18", seed)))
        main_run(folder, data_dir, [f"--seeds={seed}", "--experiments", "resnet18,resnet18_dendritic",
                                    "--control" if own_control else "--no-control", "--dendrite-epochs", str(cycle),
                                    "--dendrite-modules", DEFAULTS, *flags], "main.log")

    with ThreadPoolExecutor(jobs) as pool:  # one process per run, one thread each
        list(pool.map(baseline, seeds))
        list(pool.map(arm, [(name, seed) for seed in seeds for name in ARMS]))
    return report(out, seeds, cycle)


def finished(folder, run, seed):
    path = os.path.join(folder, run_folder(run, seed))
    with open(os.path.join(path, "result.json")) as f:
        return json.load(f), read_history(path)


def interval_text(differences):
    if len(differences) < 2:
        return f"{differences[0]:+.2f} (one seed)"
    mean, low, high = seed_interval(differences)
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def arm_row(out, name, seeds):
    """The arm's figures over seeds, each against its own control."""
    control_arm = name if ARMS[name][1] else next(iter(ARMS))
    test, val, share4, share_end, params, seconds, kept = [], [], [], [], [], [], []
    for seed in seeds:
        dendritic, history = finished(arm_folder(out, name, seed), "resnet18_dendritic", seed)
        control, control_history = finished(arm_folder(out, control_arm, seed), "resnet18_continued", seed)
        test.append(dendritic["test_accuracy"] - control["test_accuracy"])
        val.append(dendritic["val_accuracy"] - control["val_accuracy"])
        share4.append(float(history[min(3, len(history) - 1)]["dendrite_share"]))
        share_end.append(float(history[-1]["dendrite_share"]))
        params.append(dendritic["params_per_dendrite"])
        seconds.append((statistics.median(float(r["seconds"]) for r in history[1:]),
                        statistics.median(float(r["seconds"]) for r in control_history[1:])))
        kept.append(f"{dendritic['epochs']}/{control['epochs']}")
    return (f"| {name} | {interval_text(test)} | {interval_text(val)} | {statistics.mean(share4):.3%} | "
            f"{statistics.mean(share_end):.3%} | {params[0]:,} | {statistics.mean(s for s, _ in seconds):.1f} / "
            f"{statistics.mean(c for _, c in seconds):.1f} | {', '.join(kept)} |")


def report(out, seeds, cycle):
    lines = [f"One dendrite cycle of {cycle} epochs from each seed's 10-epoch baseline, seeds "
             f"{', '.join(map(str, seeds))}; each arm against its control (t interval over seeds, points).", "",
             "| arm | dendritic - control, test | dendritic - control, validation | share after 4 epochs | "
             "share at the end | parameters added | s/epoch dendritic / control | epoch kept, dendritic/control |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    lines += [arm_row(out, name, seeds) for name in ARMS]
    baselines = [finished(os.path.join(out, "baseline", f"seed{seed}"), "resnet18", seed)[0] for seed in seeds]
    lines += ["", "Baselines (validation / test): " + ", ".join(
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
    parser.add_argument("--cycle", type=int, default=30, help="epochs of the dendrite cycle (at least 20)")
    args = parser.parse_args()
    print(study(os.path.abspath(args.out), [int(seed) for seed in args.seeds.split(",")], args.jobs, args.cycle))
