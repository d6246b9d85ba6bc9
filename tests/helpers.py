"""What several test files use: the package's path, main.py in a real process, a run's history."""
import ctypes
import json
import os
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
    command = main_command(args, environment.get("WORKER_SETUP_HOOK"))
    return subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          env=dict(script_environment(), **environment))


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
