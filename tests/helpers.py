"""What several test files use: the package's path, main.py in a real process, a run's history."""
import ctypes
import json
import os
import shutil
import subprocess
import sys

from dendritic_experiment.utils import read_csv

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
PACKAGE = os.path.join(ROOT, "dendritic_experiment")
TINY_WIDTH = 0.125  # --width for the tests: ResNet-18 with 8-64 channels trains in seconds on a CPU
WITH_WORKER_HOOK = os.path.join(TESTS, "with_worker_hook.py")  # main.py whose Ray workers call a test's hook first


def script_environment():
    """A subprocess's environment in which tests/ and the package import as they do under pytest."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS, os.environ.get("PYTHONPATH", "")]))


def main_command(args, worker_hook=None):
    """main.py at --width TINY_WIDTH (args may say otherwise: the last flag wins)."""
    script = WITH_WORKER_HOOK if worker_hook else os.path.join(PACKAGE, "main.py")
    return [sys.executable, script, "--width", str(TINY_WIDTH), *args]


def run_main(args, cwd, timeout=600, **environment):
    """main.py in a real process with stdin closed, as CI and nohup run it; environment: extra variables."""
    command = main_command(args, environment.get("WORKER_SETUP_HOOK") or environment.get("SETUP_HOOK"))
    return subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          env=dict(script_environment(), **environment))


def as_planned(table):
    """Synthetic report runs (dicts with a name) with what a plan of those names says of each, as
    experiment.reported_runs gives them: kind, family, width multiple, the baseline a dendritic run or
    control starts from, and the dendritic run a control repeats: its family's where there is one, else
    the first (experiment.control_source), unless a run says otherwise."""
    from dendritic_experiment.models import model_and_width
    from dendritic_experiment.settings import split_run_name

    dendritic = [run["name"] for run in table if split_run_name(run["name"])[1] == "dendritic"]
    described = []
    for run in table:
        model, kind = split_run_name(run["name"])
        family, width_multiple = model_and_width(model)
        own = family + "_dendritic"
        plan = dict(kind=kind, family=family, width_multiple=width_multiple,
                    starts_from=None if kind == "baseline" else family,
                    repeats=(own if own in dendritic or not dendritic else dendritic[0]) if kind == "control" else None)
        described.append(dict(plan, **run))
    return described


# Each of two runs at once (--parallel-runs 2) gets half the cores as its torch threads: a run to compare
# them with gets as many, for the same float sums.
HALF_THE_CORES = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}
SMOKE = ["--smoke", "--val-split", "200"]  # main.py --smoke on the tests' data (1,000 images: a smaller split)


def copy_results(trained, destination, *runs):
    """conftest.trained_once's results (all, or only the named run folders) copied to destination, modes kept."""
    source = trained / "results"
    if not runs:
        shutil.copytree(source, destination)
    for run in runs:
        shutil.copytree(source / run, destination / run)
    return destination


def repository_files():
    """The repository's files, bytecode caches aside (pytest writes those)."""
    return {os.path.join(path, name) for path, folders, names in os.walk(ROOT)
            if "__pycache__" not in path and ".pytest_cache" not in path and "/.git" not in path for name in names}


def read_history(run_dir):
    return read_csv(os.path.join(run_dir, "history.csv"))


def assert_same_run(first, second):
    """Two run folders hold the same result: accuracies, parameters, dendrites, epochs and history."""
    a, b = (json.loads((d / "result.json").read_text()) for d in (first, second))
    for key in ("test_accuracy", "val_accuracy", "params", "dendrites", "epochs"):
        assert a[key] == b[key], key
    history_a, history_b = read_history(first), read_history(second)
    assert [(r["train_loss"], r["val_accuracy"]) for r in history_a] == \
        [(r["train_loss"], r["val_accuracy"]) for r in history_b]
    assert not (second / "checkpoint.pt").exists()


def read_only_folder():
    """A Ray worker setup hook: the folder READ_ONLY_FOLDER names becomes, for this worker alone, an
    empty read-only file system (a private mount), as for a worker that cannot write the shared
    folder. (The tests run as root, whom file modes do not stop.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private, ms_rdonly = 0x20000, 0x4000, 0x40000, 1
    folder = os.environ["READ_ONLY_FOLDER"].encode()
    if (libc.unshare(clone_newns) or libc.mount(b"none", b"/", None, ms_rec | ms_private, None)
            or libc.mount(b"tmpfs", folder, b"tmpfs", ms_rdonly, None)):
        raise OSError(ctypes.get_errno(), "a private read-only mount for the test")


def scripted_validation(scores=None, patch=setattr):
    """A setup hook: every epoch of a dendritic run and of its control scores the validation accuracy
    that SCRIPTED_VAL_ACCURACY (or scores) gives for it (a comma list, by epoch), not the model's, so
    that which epoch scores best, and so which cycles are kept and where the runs roll back, is the same
    on every CPU (float sums differ between processors). The baseline, the warm start's score of it and
    every reported accuracy (the final evaluations and the test) stay the models' own. In a test's own
    process, patch with monkeypatch.setattr, which undoes it."""
    from dendritic_experiment import runs

    scores = [float(value) for value in (scores or os.environ["SCRIPTED_VAL_ACCURACY"]).split(",")]
    real_train_epoch, real_evaluate = runs.train_epoch, runs.evaluate
    epoch_of_continuation = []  # the epoch being trained, while it is one of a run that continues a baseline

    def train_epoch(run, run_name, epoch, *args):
        epoch_of_continuation[:] = [epoch] if run.data_stream == "continuation" else []
        return real_train_epoch(run, run_name, epoch, *args)

    def evaluate(*args, **kwargs):  # runs.py evaluates validation once per epoch, in train_epoch alone
        result = real_evaluate(*args, **kwargs)
        return dict(result, accuracy=scores[epoch_of_continuation[0] - 1]) if epoch_of_continuation else result

    patch(runs, "train_epoch", train_epoch)
    patch(runs, "evaluate", evaluate)


def nan_loss():
    """A Ray worker setup hook: a training loss that is NaN from the first step."""
    from dendritic_experiment import train

    real_step = train.training_step

    def step_with_nan_loss(*args):
        loss, logits = real_step(*args)
        return loss * float("nan"), logits

    train.training_step = step_with_nan_loss


def forget_sweep():
    """A Ray worker setup hook: the worker does not know the driver's sweep trial (WANDB_SWEEP_ID,
    WANDB_RUN_ID), as a worker of a `ray start` cluster, which does not inherit the driver's environment."""
    for name in ("WANDB_SWEEP_ID", "WANDB_RUN_ID"):
        os.environ.pop(name, None)
