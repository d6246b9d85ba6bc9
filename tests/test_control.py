"""The control is a control: a dendritic run and its control differ by the dendrites alone. With
dendrites that cannot learn, they must be the same run (an A/A check)."""
import itertools
import json

import pytest
import torch

from helpers import copy_results, read_history, run_main

WARM_START = ["--seeds", "0", "--val-split", "200", "--batch-size", "100", "--epochs", "1", "--warmup-epochs", "0",
              "--experiments", "resnet18,resnet18_dendritic", "--dendrite-epochs", "2", "--max-dendrites", "3"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def finished(results, run):
    result = json.loads((results / run / "result.json").read_text())
    predictions = torch.load(results / run / "test_predictions.pt", weights_only=True)["predicted"]
    return result, read_history(results / run), predictions


# The A/A check: dendrites that cannot learn (--dendrite-lr-multiplier 0; each one's output scale stays at
# zero, so it adds exactly nothing), a seed other than 0, a warm-up epoch per cycle and a min gain of 0.3
# points. Both runs' validation scores are scripted (helpers.scripted_validation), so that every CPU keeps
# the same cycles; a cycle with d dendrites scores its best epoch less 0.3 d, and is kept when that beats
# the best so far (first the baseline's own score, a few percent).
A_A = ["--seeds", "2", "--val-split", "200", "--batch-size", "100", "--epochs", "1", "--warmup-epochs", "0",
       "--experiments", "resnet18,resnet18_dendritic", "--dendrite-lr-multiplier", "0", "--dendrite-min-gain", "0.3",
       "--dendrite-warmup-epochs", "1", "--max-dendrites", "3"]


@pytest.mark.parametrize("mode, scores, cycles, kept_epoch", [
    # Fixed 3-epoch cycles: 51.0 - 0.3 at epoch 2 is kept; 51.8 - 0.6 = 51.2 at epoch 5 beats 50.7, kept;
    # the third cycle's best, 52.0 - 0.9 = 51.1, does not beat 51.2: rolled back to epoch 5, the run ends.
    (["--dendrite-epochs", "3"], "50.0,51.0,50.5,51.2,51.8,51.5,52.0,52.0,51.0", [3, 3, 3], 5),
    # History mode, a switch after 2 epochs without a new best of the cycle: the first cycle peaks at
    # epoch 2 and ends at 4 (kept: 50.7); the second peaks at once, 51.0 - 0.6 = 50.4, and ends at 7,
    # below 50.7: rolled back to epoch 2.
    (["--switch-mode", "history", "--history-epochs", "2"], "50.0,51.0,50.5,50.8,51.0,50.9,50.8", [4, 3], 2),
])
def test_dendrites_that_never_learn_reproduce_the_control(mode, scores, cycles, kept_epoch, data_dir, tmp_path,
                                                         trained_once):
    """The dendritic run and its control must then agree in every history column they share, in the
    final weights and in every test prediction, though the dendritic run draws random numbers for its
    dendrites and the library saves, rolls back and restructures its model."""
    baseline = trained_once("a_a_baseline", [*A_A, "--experiments", "resnet18"], **ONE_THREAD)  # both cases' start
    copy_results(baseline, tmp_path / "out", "resnet18_seed2")
    process = run_main(["--data-dir", data_dir, "--results-dir", "out", *A_A, *mode], cwd=tmp_path, **ONE_THREAD,
                       SETUP_HOOK="helpers.scripted_validation", SCRIPTED_VAL_ACCURACY=scores)
    assert process.returncode == 0, process.stderr
    assert "resnet18: reusing" in process.stderr
    assert "lr_scheduler.step()" not in process.stderr  # PyTorch's warning, which the control's frozen epochs gave
    dendritic, dendritic_history, dendritic_predictions = finished(tmp_path / "out", "resnet18_dendritic_seed2")
    control, control_history, control_predictions = finished(tmp_path / "out", "resnet18_continued_seed2")
    # Not vacuous: the cycles scripted, a rollback past the last epoch, and a kept epoch inside its cycle.
    assert dendritic["cycles"] == cycles and dendritic["epochs"] == kept_epoch
    assert dendritic["epochs_trained"] == sum(cycles) and dendritic["epochs"] not in itertools.accumulate(cycles)
    assert [float(row["val_accuracy"]) for row in dendritic_history] == [float(s) for s in scores.split(",")]
    assert max(float(row["dendrite_scale"]) for row in dendritic_history) == 0.0
    shared = (set(dendritic_history[0]) & set(control_history[0])) - {"seconds"}
    assert {"lr", "val_loss", "val_accuracy", "train_loss", "train_accuracy"} <= shared
    for column in sorted(shared):
        assert [row[column] for row in dendritic_history] == [row[column] for row in control_history], column
    for key in ("epochs", "epochs_trained", "val_accuracy", "test_accuracy"):
        assert dendritic[key] == control[key], key
    assert torch.equal(dendritic_predictions, control_predictions)
    control_weights = torch.load(tmp_path / "out" / "resnet18_continued_seed2" / "model.pt", weights_only=True)
    network_weights = network_part(torch.load(tmp_path / "out" / "resnet18_dendritic_seed2" / "model.pt",
                                              weights_only=True)["model"])
    assert network_weights.keys() == control_weights.keys()
    assert all(torch.equal(network_weights[name], control_weights[name]) for name in control_weights), \
        [name for name in control_weights if not torch.equal(network_weights[name], control_weights[name])]


def network_part(state):
    """A dendritic model's own network in a plain model's names: a wrapped conv+bn pair's
    `<pair>.main_module.model.<i>.*` is the plain `<pair>.<i>.*`; dendrites and library records left out."""
    return {name.replace(".main_module.model.", "."): value for name, value in state.items()
            if ".main_module.model." in name or not any(part in name for part in (
                "dendrite", "this_output_dimensions", "this_node_index", "tracker_string"))}


def test_a_cycle_that_gains_too_little_is_rolled_back_by_both(data_dir, tmp_path):
    """A gain of 99 points is out of reach: the dendritic run removes its dendrite, the control drops
    its cycle, and both report the baseline's own model, trained 0 epochs beyond it."""
    process = run_main(["--data-dir", data_dir, "--results-dir", "out", *WARM_START, "--dendrite-min-gain", "99"],
                       cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    baseline, _, baseline_predictions = finished(tmp_path / "out", "resnet18")
    for run in ("resnet18_dendritic", "resnet18_continued"):
        result, history, predictions = finished(tmp_path / "out", run)
        assert len(history) == result["epochs_trained"] == 2  # one cycle, then it stopped
        assert (result["epochs"], result["epochs_including_baseline"], result["dendrites"]) == (0, 1, 0), run
        assert (result["params"], result["val_accuracy"]) == (baseline["params"], baseline["val_accuracy"]), run
        assert result["test_accuracy"] == baseline["test_accuracy"] and torch.equal(predictions, baseline_predictions)


def test_during_a_dendrite_warm_up_only_the_dendrites_learn_and_the_control_is_frozen(tiny, tmp_path):
    """--dendrite-warmup-epochs 2 in cycles of 4: epochs 1 and 2 move the dendrites only, epoch 3 both;
    the control's network stays as it was for epochs 1 and 2, as the dendritic run's does. In fp16 the
    two runs' gradient scalers come out of the warm-up the same (the control takes no step in it)."""
    from dendritic_experiment.continuation import ContinuedRun, DendriticRun
    from dendritic_experiment.data import Data
    from dendritic_experiment.dendrites import DENDRITE_PARAMETER
    from dendritic_experiment.models import build_model
    from dendritic_experiment.settings import parse_settings
    from dendritic_experiment.train import TrainingSetup

    # 16 images, 2 steps an epoch: the CPU has no fp16 convolution kernels (a step of 100 images takes it 15 s)
    settings = parse_settings(["--batch-size", "8", "--dendrite-epochs", "4", "--dendrite-warmup-epochs", "2"])
    setup = TrainingSetup(settings, torch.device("cpu"), "fp16")
    torch.manual_seed(0)
    images, labels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 100, (16,))
    data = Data(images, labels, images, labels, images, labels, [f"class {i}" for i in range(100)])
    baseline = build_model("resnet18", width=settings.width).state_dict()
    dendritic = DendriticRun("resnet18", data, setup, 0, str(tmp_path / "run"), baseline)
    dendritic_moved, dendritic_scales = parameters_moved_by_epoch(dendritic, "resnet18_dendritic", 3)
    for epoch, moved in enumerate(dendritic_moved, start=1):
        assert any(DENDRITE_PARAMETER.search(name) for name in moved), epoch
        assert any(not DENDRITE_PARAMETER.search(name) for name in moved) == (epoch == 3), epoch
    control = ContinuedRun("resnet18", data, setup, 0, baseline, cycles=[4], lrs=[0.1] * 4)
    control_moved, control_scales = parameters_moved_by_epoch(control, "resnet18_continued", 3)
    assert [bool(moved) for moved in control_moved] == [False, False, True]
    assert dendritic_scales[:2] == control_scales[:2]


def parameters_moved_by_epoch(run, run_name, epochs):
    """Started, then trained for epochs 1 to epochs: the names of the parameters each epoch changed, and
    the run's gradient scaler's state after each epoch."""
    from dendritic_experiment.runs import train_epoch

    moved, scales, scaler = [], [], run.setup.grad_scaler()
    try:
        run.start()
        before = {name: value.detach().clone() for name, value in run.model.named_parameters()}
        for epoch in range(1, epochs + 1):
            train_epoch(run, run_name, epoch, scaler, checkpoint=None)
            after = {name: value.detach().clone() for name, value in run.model.named_parameters()}
            moved.append({name for name in before if not torch.equal(before[name], after[name])})
            scales.append(scaler.state_dict())
            before = after
    finally:
        run.close()
    return moved, scales


def test_an_optimizer_rebuilt_during_a_warm_up_still_trains_the_network(new_tracker):
    """A switch can rebuild the optimizer while a warm-up has the network frozen; the library drops
    frozen parameters, so the rebuild must make them trainable first, or the network never trains again."""
    from dendritic_experiment.train import network_group

    dendrites = new_tracker()
    for parameter in dendrites.model.parameters():
        parameter.requires_grad_(False)  # as a warm-up epoch leaves the network
    optimizer, _ = dendrites.setup_optimizer(torch.optim.SGD, dict(lr=0.1), torch.optim.lr_scheduler.LambdaLR,
                                             dict(lr_lambda=lambda epoch: 1.0))
    assert len(network_group(optimizer)["params"]) == len(list(dendrites.model.parameters()))
    assert all(parameter.requires_grad for parameter in network_group(optimizer)["params"])
