"""Kill main.py with SIGKILL mid-run, run it again: it must finish exactly as if never killed."""
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from helpers import assert_same_run, main_command, read_history, run_main, script_environment

# A baseline of 4 epochs, then 3-epoch dendrite cycles whose first 2 epochs train the dendrites alone
# (every gain keeps its dendrite, so the dendritic run goes on into a second cycle) and the control;
# a checkpoint after every epoch.
FLAGS = ["--seeds", "0", "--val-split", "200", "--batch-size", "100", "--warmup-epochs", "1", "--checkpoint-seconds", "0",
         "--experiments", "resnet18,resnet18_dendritic", "--epochs", "4", "--dendrite-epochs", "3", "--max-dendrites", "3",
         "--dendrite-min-gain", "0", "--dendrite-warmup-epochs", "2"]


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """The runs trained once without interruption: what every killed run must end as."""
    folder = tmp_path_factory.mktemp("straight")
    process = run_main(["--data-dir", data_dir, *FLAGS, "--results-dir", str(folder)], cwd=folder)
    assert process.returncode == 0, process.stderr
    return folder


def kill_after_epochs(args, cwd, history_path, epochs, timeout=300):
    """Start main.py (tiny models) and SIGKILL it once history.csv shows `epochs` finished epochs and a
    checkpoint is there."""
    process = subprocess.Popen(main_command(args), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=script_environment())
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        run_dir = os.path.dirname(history_path)  # a checkpoint is written just after the history: wait for one
        if os.path.exists(history_path) and len(read_history(run_dir)) >= epochs and \
                os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("run, finished_before, epochs, only", [
    ("resnet18", (), 2, ["--experiments", "resnet18"]),
    # After a restructure, mid-way through a warm-up; two switches, each a rollback to the library's
    # best-model file, are still to come.
    ("resnet18_dendritic", ("resnet18",), 4, ["--no-control"]),
    ("resnet18_continued", ("resnet18", "resnet18_dendritic"), 1, []),  # mid-way through its frozen epochs
])
def test_a_killed_run_resumes_to_the_same_result(run, finished_before, epochs, only, straight, data_dir, tmp_path):
    killed = tmp_path / "killed"
    for finished in finished_before:  # the same finished runs it starts from
        shutil.copytree(straight / finished, killed / finished)
    args = ["--data-dir", data_dir, *FLAGS, *only, "--results-dir", str(killed)]  # no run after this one
    kill_after_epochs(args, tmp_path, killed / run / "history.csv", epochs)
    assert (killed / run / "checkpoint.pt").exists() and not (killed / run / "result.json").exists()
    best_model = killed / run / "PAI" / "best_model.pt"
    if best_model.exists():  # the library's file of the model it rolls back to: the checkpoint must bring it back
        best_model.write_bytes(b"a model the resumed run never scored")

    again = run_main(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{run}: resuming after epoch" in again.stderr
    assert all(f"{finished}: reusing" in again.stderr for finished in finished_before)
    assert_same_run(straight / run, killed / run)
    weights = [model_weights(d / run / "model.pt") for d in (straight, killed)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def model_weights(path):
    """The weights in a model.pt (a dendritic run's holds them beside the tracker's state, and its
    state_dict has the library's `tracker_string` buffer: its records, timings included)."""
    saved = torch.load(path, weights_only=True)
    if "tracker" not in saved:
        return saved
    return {key: value for key, value in saved["model"].items() if key != "tracker_string"}
