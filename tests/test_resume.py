"""Kill main.py with SIGKILL mid-run, run it again: it must finish exactly as if never killed."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from helpers import assert_same_run, main_command, read_history, run_main, script_environment

# A baseline of 4 epochs, then two 4-epoch dendrite cycles whose first 2 epochs train the dendrites alone,
# and the control; a checkpoint after every epoch. The dendritic run and the control score scripted
# validation accuracies that rise every epoch (helpers.scripted_validation), so that both cycles are kept
# on every CPU.
FLAGS = ["--seeds", "0", "--val-split", "200", "--batch-size", "100", "--warmup-epochs", "1", "--checkpoint-seconds", "0",
         "--experiments", "resnet18,resnet18_dendritic", "--epochs", "4", "--dendrite-epochs", "4", "--max-dendrites", "2",
         "--dendrite-min-gain", "0", "--dendrite-warmup-epochs", "2"]
SCRIPTED = dict(SETUP_HOOK="helpers.scripted_validation", SCRIPTED_VAL_ACCURACY="50,51,52,53,54,55,56,57")


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """The runs trained once without interruption: what every killed run must end as."""
    folder = tmp_path_factory.mktemp("straight")
    process = run_main(["--data-dir", data_dir, *FLAGS, "--results-dir", str(folder)], cwd=folder, **SCRIPTED)
    assert process.returncode == 0, process.stderr
    assert json.loads((folder / "resnet18_dendritic" / "result.json").read_text())["cycles"] == [4, 4]  # both kept
    return folder


def kill_after_epochs(args, cwd, history_path, epochs, timeout=300, **environment):
    """Start main.py (tiny models) and SIGKILL it once history.csv shows `epochs` finished epochs and a
    checkpoint is there."""
    process = subprocess.Popen(main_command(args, environment.get("SETUP_HOOK")), cwd=cwd, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=dict(script_environment(), **environment))
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
    ("resnet18_dendritic", ("resnet18",), 5, ["--no-control"]),  # after a restructure, mid-way through a warm-up
    ("resnet18_continued", ("resnet18", "resnet18_dendritic"), 3, []),  # mid-cycle, after its first optimizer steps
])
def test_a_killed_run_resumes_to_the_same_result(run, finished_before, epochs, only, straight, data_dir, tmp_path):
    killed = tmp_path / "killed"
    for finished in finished_before:  # the same finished runs it starts from
        shutil.copytree(straight / finished, killed / finished)
    args = ["--data-dir", data_dir, *FLAGS, *only, "--results-dir", str(killed)]  # no run after this one
    kill_after_epochs(args, tmp_path, killed / run / "history.csv", epochs, **SCRIPTED)
    assert (killed / run / "checkpoint.pt").exists() and not (killed / run / "result.json").exists()

    again = run_main(args, cwd=tmp_path, **SCRIPTED)
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


def test_a_resumed_dendritic_run_rolls_back_to_the_model_its_checkpoint_scored(tiny, tmp_path, monkeypatch):
    """The library reloads its best-model file at a switch. A crash after a checkpoint can leave a newer
    best there, which the resumed run never scored: the checkpoint must bring back its own. Without
    training: each epoch's model is tagged (fc.bias[0] = epoch) and given a validation score by hand."""
    from dendritic_experiment import continuation
    from dendritic_experiment.continuation import DendriticRun
    from dendritic_experiment.data import Data
    from dendritic_experiment.models import build_model
    from dendritic_experiment.settings import parse_settings
    from dendritic_experiment.train import TrainingSetup

    from helpers import TINY_WIDTH

    settings = parse_settings(["--dendrite-epochs", "3", "--max-dendrites", "2", "--dendrite-min-gain", "0.5"])
    setup = TrainingSetup(settings, torch.device("cpu"), "fp32")
    images, labels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.tensor([1, 2, 3, 4])
    data = Data(images, labels, images, labels, images, labels, [f"class {i}" for i in range(100)])
    monkeypatch.setattr(continuation, "evaluate", lambda *args, **kwargs: {"accuracy": 50.0})
    weights = build_model("resnet18", width=TINY_WIDTH).state_dict()

    def scored(run, epoch, val_accuracy):
        with torch.no_grad():
            run.model.fc.bias[0] = epoch
        run.end_epoch(epoch, val_accuracy, val_accuracy)

    first = DendriticRun("resnet18", data, setup, 0, str(tmp_path / "run"), weights)
    try:
        first.start()
        scored(first, 1, 51.0)  # a new best: the library saves this model
        state = first.state_dict()  # the checkpoint after epoch 1
        scored(first, 2, 52.0)  # a newer best, saved after the checkpoint; then the crash
    finally:
        first.close()
    resumed = DendriticRun("resnet18", data, setup, 0, str(tmp_path / "run"), None)
    try:
        resumed.resume(state, epoch=1)
        scored(resumed, 2, 50.75)  # the resumed epoch 2 scores lower than epoch 1
        scored(resumed, 3, 50.75)  # the cycle ends: kept (epoch 1, 1.0 above), the model rolled back to
        assert resumed.keep.kept_epoch == 1 and resumed.dendrites.dendrite_count == 2
        assert float(resumed.model.fc.bias[0].detach()) == 1.0
    finally:
        resumed.close()
