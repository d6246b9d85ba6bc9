import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dendritic_experiment.data import epoch_draws, prepare_batch
from dendritic_experiment.models import build_model
from dendritic_experiment.settings import parse_settings
from dendritic_experiment.train import TrainingSetup, network_group, training_step, warmup_cosine
from dendritic_experiment.utils import read_csv

from helpers import TINY_WIDTH, read_history, run_main, script_environment

BASELINE_LEARNS = 8.0  # validation accuracy (%) the 3-epoch tiny baseline below beats: 13.0 measured (2-core CPU), less 5
SCRIPTED_CYCLES = "20,21,30,25"  # validation (%) of the dendritic run's 4 epochs: above the ~13% baseline


def test_one_training_step_lowers_the_loss(tiny):
    torch.manual_seed(0)
    settings = parse_settings(["--device", "cpu"])
    setup = TrainingSetup(settings, torch.device("cpu"), "fp32")
    model = setup.place(build_model("resnet18", width=TINY_WIDTH))
    optimizer = torch.optim.SGD(model.parameters(), **setup.optimizer_kwargs(0.05))
    x = prepare_batch(torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8))
    y = torch.randint(0, 100, (32,))

    def loss():
        return F.cross_entropy(model(x), y, label_smoothing=settings.label_smoothing)

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert loss().item() < before.item() - 0.01


def test_a_network_narrower_than_8_channels_trains_on_the_cpu_in_its_default_layout(tmp_path):
    """resnet18_w0.875 at --width 0.125: a 7-channel layer1, whose 1x1 stride-2 shortcut torch's CPU
    backward cannot run in channels_last (an abort, which would take this test process with it)."""
    step = ("import torch; from dendritic_experiment.settings import parse_settings; "
            "from dendritic_experiment.models import build_model; "
            "from dendritic_experiment.train import TrainingSetup, training_step; "
            "setup = TrainingSetup(parse_settings([]), torch.device('cpu'), 'fp32'); "
            "model = setup.place(build_model('resnet18_w0.875', width=0.125)); "
            "optimizer = torch.optim.SGD(model.parameters(), lr=0.1); "
            "loss, _ = training_step(model, torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.zeros(8, dtype=torch.long), "
            "optimizer, setup, setup.grad_scaler()); print(setup.memory_format, loss.item() > 0)")
    process = subprocess.run([sys.executable, "-c", step], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env=script_environment())
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.split() == ["torch.contiguous_format", "True"]
    assert "channels_last is off for this run" in process.stderr


def test_schedule_warms_up_then_decays_to_zero():
    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) == 0.1 and factor(9) == 1.0
    assert 0.49 < factor(55) < 0.51
    assert factor(100) == 0.0
    assert all(factor(s) >= factor(s + 1) for s in range(9, 100))


def test_dendritic_run_adds_a_dendrite_with_stdin_closed_and_stops_itself(data_dir, tmp_path):
    results = tmp_path / "results"
    process = run_main(["--data-dir", data_dir, "--results-dir", str(results), "--seeds", "0", "--val-split", "200",
                        "--experiments", "resnet18,resnet18_dendritic", "--no-control", "--epochs", "3",
                        "--warmup-epochs", "1", "--batch-size", "50", "--dendrite-epochs", "2", "--max-dendrites", "2"],
                       cwd=tmp_path, SETUP_HOOK="helpers.scripted_validation", SCRIPTED_VAL_ACCURACY=SCRIPTED_CYCLES)
    assert process.returncode == 0, process.stderr
    assert "lr_scheduler.step()" not in process.stderr  # no PyTorch warning in a normal run
    run_dir = results / "resnet18_dendritic"
    history = read_history(run_dir)
    baseline = json.loads((results / "resnet18" / "result.json").read_text())
    result = json.loads((run_dir / "result.json").read_text())
    # The baseline learns: 100 colour-coded classes (chance: 1%) reach BASELINE_LEARNS on validation.
    assert baseline["val_accuracy"] > BASELINE_LEARNS
    # The learning rate of each epoch, by hand: batch 50 scales lr 0.1 to 0.1 * 50 / 128 = 0.0390625; 800
    # training images make 16 steps an epoch, 48 in all; the warm-up's first step has 1/16 of it, the
    # cosine starts at step 16 and is half-way (factor 0.5) at step 32.
    assert [float(row["lr"]) for row in read_history(results / "resnet18")] == pytest.approx(
        [0.0390625 / 16, 0.0390625, 0.0390625 * 0.5])
    # Each 2-epoch dendrite cycle restarts its cosine at 0.02 * 50 / 128 = 0.0078125, then half of it.
    assert [float(row["lr"]) for row in history] == pytest.approx([0.0078125, 0.00390625] * (len(history) // 2))
    # Warm start: the first dendrite is in from the first epoch, and it really adds parameters.
    assert result["start"] == "baseline" and int(history[0]["dendrites"]) == 1
    assert int(history[0]["params"]) > baseline["params"]
    # Fixed cycles of 2 epochs, at most 2 dendrites, validation scored as SCRIPTED_CYCLES says on every CPU:
    # both cycles beat the best so far by more than dendrite_min_gain (0.5), so both dendrites are kept and
    # the run ends after 4 epochs with the model of epoch 3, its second cycle's best (epoch 4 rolled back).
    assert result["epochs_trained"] == len(history) == 4 and result["epochs"] == 3 and result["dendrites"] == 2
    assert result["epochs_including_baseline"] == 3 + 3
    assert [int(row["dendrites"]) for row in history] == [1, 1, 2, 2]
    # The result is the model the tracker kept: its parameters match its dendrite count.
    assert result["params"] == int(history[2]["params"]) > int(history[0]["params"])
    # The library's graph is kept with the run: the warm start's report of the baseline, then the epochs
    # the kept model trained through, each score as the tracker saw it: less dendrite_min_gain (0.5) per
    # dendrite, plus 1 + 2 * 0.5 (max_dendrites 2) to keep it above 0 (keep_rule.py); the rolled-back
    # epoch 4 is not in it. By hand: 20 - 0.5 + 2, 21 - 0.5 + 2, 30 - 1 + 2.
    # Nothing is written to the current directory.
    assert (run_dir / "PAI.png").read_bytes().startswith(b"\x89PNG")
    graphed = [float(row["Validation Scores"]) for row in read_csv(run_dir / "PAIScores.csv") if row["Validation Scores"]]
    assert graphed == pytest.approx([baseline["val_accuracy"] + 2.0, 21.5, 22.5, 31.0])
    assert not (tmp_path / "PAI").exists()


def backward_once(model):
    """The library learns tensor shapes from a backward pass."""
    model.eval()
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    model.zero_grad()


def test_warm_started_dendrite_that_lowers_validation_is_removed(new_tracker):
    dendrites = new_tracker("--max-dendrites", "3")
    baseline_params = dendrites.parameter_count()

    def new_optimizer():
        return dendrites.setup_optimizer(torch.optim.SGD, dict(lr=0.1), torch.optim.lr_scheduler.StepLR, dict(step_size=1))

    new_optimizer()
    backward_once(dendrites.model)
    model, _, complete = dendrites.start_from_baseline(50.0, 50.0)
    assert dendrites.dendrite_count == 1 and not complete
    optimizer, _ = new_optimizer()
    assert network_group(optimizer)["lr"] == 0.1  # the new cycle's schedule starts at its start
    backward_once(model)
    model, _, complete = dendrites.end_epoch(40.0, 40.0, 1, force_switch=True)  # worse with the dendrite
    assert complete and dendrites.dendrite_count == 0 and dendrites.parameter_count() == baseline_params


def test_first_phase_from_scratch_lasts_the_baseline_epochs(tiny, data_dir, tmp_path):
    from dendritic_experiment import main

    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), "--seeds", "0", "--val-split", "150", "--batch-size", "100",
               "--experiments", "resnet18_dendritic", "--no-warm-start", "--epochs", "3", "--warmup-epochs", "0",
               "--dendrite-epochs", "1", "--max-dendrites", "1"])
    history = read_history(results / "resnet18_dendritic")
    assert [row["dendrites"] for row in history] == ["0", "0", "0", "1"]
    result = json.loads((results / "resnet18_dendritic" / "result.json").read_text())
    assert result["start"] == "scratch" and result["epochs_trained"] == 4
    first_phase = [float(row["val_accuracy"]) for row in history[:3]]
    best_of_first_phase = first_phase.index(max(first_phase)) + 1  # kept when the dendrite is removed
    assert result["epochs"] == result["epochs_including_baseline"] == (4 if result["dendrites"] else best_of_first_phase)


def test_compiled_training_matches_eager_across_a_dendrite_restructure(tiny, data_dir, tmp_path, monkeypatch):
    """--compile must train the model the tracker restructures, not a stale graph of the old one.
    The aot_eager backend runs the same graph capture as the default one (Dynamo, guards, graph
    breaks at the library's modules, AOT autograd) without a C++ build of the kernels."""
    from dendritic_experiment import main

    results = tmp_path / "results"
    flags = ["--data-dir", data_dir, "--results-dir", str(results), "--seeds", "0", "--val-split", "200",
             "--batch-size", "100", "--experiments", "resnet18,resnet18_dendritic", "--no-control", "--epochs", "2",
             "--warmup-epochs", "1", "--dendrite-epochs", "2", "--max-dendrites", "2"]
    main.main(flags)
    eager = read_history(results / "resnet18_dendritic")
    (results / "resnet18_dendritic").rename(results / "eager")
    compiled_models = []
    real_compile = torch.compile

    def compile_for_test(model):
        compiled_models.append(model)
        return real_compile(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_for_test)
    torch._dynamo.utils.counters.clear()
    main.main(flags + ["--compile"])  # the baseline is reused; the dendritic run trains compiled
    compiled = read_history(results / "resnet18_dendritic")
    assert len(compiled_models) == 1  # perforatedai grew this one model in place
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # and graphs were captured
    assert [row["dendrites"] for row in compiled] == [row["dendrites"] for row in eager] == ["1", "1", "2", "2"]
    for a, b in zip(eager, compiled):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) < 1e-4 * float(a["train_loss"])
        assert a["val_accuracy"] == b["val_accuracy"]


def resnet18_with_0_1_2_dendrites(setup, tmp_path, images, labels):
    """The plain model, then copies of it with 1 and 2 dendrites, grown as a warm-started run grows them."""
    import benchmark  # tests/benchmark.py

    grown = benchmark.dendritic_models(setup, str(tmp_path), images, labels)
    return [build_model("resnet18", width=TINY_WIDTH)] + [copy.deepcopy(model) for _, model, _, _ in grown]


def resumed_dendritic_model(setup, tmp_path, images, labels):
    """A warm-started ResNet-18 with its first dendrite, saved as a checkpoint saves it and restored
    by a resumed run in the same process (the first run's tracker released, as a finished run's is)."""
    from dendritic_experiment.continuation import DendriticRun
    from dendritic_experiment.data import Data

    data = Data(images, labels, images, labels, images, labels, [f"class {i}" for i in range(100)])
    first = DendriticRun("resnet18", data, setup, 0, str(tmp_path / "resumed"), build_model("resnet18", width=TINY_WIDTH).state_dict())
    first.start()
    state = first.state_dict()
    first.close()
    resumed = DendriticRun("resnet18", data, setup, 0, str(tmp_path / "resumed"), None)
    resumed.resume(state, epoch=1)
    resumed.close()
    assert resumed.dendrites.dendrite_count == 1
    return resumed.model


def test_a_training_step_reads_nothing_back_from_the_device(tiny, tmp_path):
    """No host-device synchronisation inside the step, perforatedai's modules included, also in a
    run resumed from its checkpoint: a tensor on the meta device has no values, so any read of one
    (.item(), `if tensor:`, a mask) raises there, and a step that runs there would not wait for a GPU."""
    settings = parse_settings(["--device", "cpu"])
    on_cpu = TrainingSetup(settings, torch.device("cpu"), "fp32")
    on_meta = TrainingSetup(settings, torch.device("meta"), "fp32")
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 100, (8,))
    models = resnet18_with_0_1_2_dendrites(on_cpu, tmp_path, images, labels)
    for model in models + [resumed_dendritic_model(on_cpu, tmp_path, images, labels)]:
        model = on_meta.place(model).train()
        optimizer = torch.optim.SGD(model.parameters(), **on_meta.optimizer_kwargs(0.1))
        # The draws as train_one_epoch makes them: on the CPU once per epoch, then on the device.
        _, draws = epoch_draws(images.to("meta"), len(images), 1, settings.augment, settings.cutout)
        loss, logits = training_step(model, images.to("meta"), labels.to("meta"), optimizer, on_meta,
                                     on_meta.grad_scaler(), draws)
        assert loss.device.type == "meta" and logits.shape == (8, 100)


def test_a_second_live_tracker_in_one_process_is_refused(new_tracker):
    from dendritic_experiment.dendrites import LibraryInUse

    first = new_tracker()
    with pytest.raises(LibraryInUse, match="perforatedai keeps one tracker per process and one is in use"):
        new_tracker()
    first.close()
    new_tracker()  # once the first is released


def test_an_fp16_step_that_overflows_is_skipped_without_a_trace():
    """fp16's loss scale starts high, so early steps overflow and the scaler skips them; the next
    step must then train as if the skipped one never was (fused SGD's momentum would be garbage)."""
    setup = TrainingSetup(parse_settings([]), torch.device("cpu"), "fp16")
    torch.manual_seed(0)
    model, x = torch.nn.Linear(8, 4), torch.randn(16, 8)
    fresh = copy.deepcopy(model)
    optimizer, scaler = torch.optim.SGD(model.parameters(), **setup.optimizer_kwargs(0.1)), setup.grad_scaler()
    for overflow in (float("inf"), 1.0):
        optimizer.zero_grad()
        scaler.scale(model(x).pow(2).mean() * overflow).backward()
        scaler.step(optimizer)
        scaler.update()
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), **setup.optimizer_kwargs(0.1))
    fresh(x).pow(2).mean().backward()
    fresh_optimizer.step()  # the second step alone, unscaled
    assert torch.allclose(model.weight, fresh.weight) and torch.allclose(model.bias, fresh.bias)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_precision_fits_a_batch_with_and_without_dendrites(precision, tiny, tmp_path):
    """bf16 is the GPU default and fp16 the fallback (with its gradient scaler); both run here under
    the CPU's autocast, through the real step, with perforatedai's modules in the model. (A batch of 8:
    the CPU has no fp16 convolution kernels, and a step of 32 images takes it 5 s.)"""
    settings = parse_settings(["--no-augment", "--cutout", "0"])
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 100, (8,))
    setup = TrainingSetup(settings, torch.device("cpu"), precision)
    for model in resnet18_with_0_1_2_dendrites(setup, tmp_path, images, labels):
        model = setup.place(model).train()
        optimizer, scaler = torch.optim.SGD(model.parameters(), **setup.optimizer_kwargs(0.05)), setup.grad_scaler()
        losses = [training_step(model, images, labels, optimizer, setup, scaler)[0].item() for _ in range(6)]
        assert losses[-1] < losses[0] - 1, losses


def small_data(count=8):
    from dendritic_experiment.data import Data

    torch.manual_seed(0)
    images, labels = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 100, (count,))
    return Data(images, labels, images, labels, images, labels, [f"class {i}" for i in range(100)])


def test_every_optimizer_group_has_the_settings_momentum_nesterov_and_weight_decay(tiny, tmp_path):
    """The baseline's, the control's, and a dendritic run's two groups (its dendrites have a weight
    decay of their own), with values other than config.py's so that a default cannot pass for them."""
    from dendritic_experiment.continuation import ContinuedRun, DendriticRun
    from dendritic_experiment.runs import BaselineRun

    settings = parse_settings(["--momentum", "0.8", "--weight-decay", "0.001", "--dendrite-weight-decay", "0.0002",
                               "--batch-size", "4"])
    setup, data = TrainingSetup(settings, torch.device("cpu"), "fp32"), small_data()
    weights = build_model("resnet18", width=TINY_WIDTH).state_dict()
    runs = [BaselineRun("resnet18", data, setup, 0), ContinuedRun("resnet18", data, setup, 0, weights, [1], [0.01]),
            DendriticRun("resnet18", data, setup, 0, str(tmp_path / "run"), weights)]
    groups = {}
    for run in runs:
        try:
            run.start()
            run.begin_epoch(1)
            groups.update({(type(run).__name__, group["name"]): group for group in run.optimizer.param_groups})
        finally:
            run.close()
    assert sorted(groups) == [("BaselineRun", "network"), ("ContinuedRun", "network"), ("DendriticRun", "dendrites"),
                              ("DendriticRun", "network")]
    assert groups["ContinuedRun", "network"]["lr"] == 0.01  # the dendritic run's rate, replayed
    for (run, name), group in groups.items():
        assert (group["momentum"], group["nesterov"]) == (0.8, True), run
        assert group["weight_decay"] == (0.0002 if name == "dendrites" else 0.001), run


def test_training_smooths_its_labels_and_augments_while_evaluation_does_neither(tiny):
    """The training loss by hand, with label smoothing s over C classes: -(1 - s) log p_y - s / C sum_c log p_c;
    the model sees augmented images (crops, flips, cutout) in training and the images themselves in evaluation."""
    from dendritic_experiment.train import evaluate

    settings = parse_settings(["--label-smoothing", "0.3", "--no-augment", "--cutout", "0"])
    setup, data = TrainingSetup(settings, torch.device("cpu"), "fp32"), small_data()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 100))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    clean = prepare_batch(data.train_images, memory_format=torch.contiguous_format)
    log_p = torch.log_softmax(model(clean), 1).detach()
    by_hand = (-(1 - 0.3) * log_p.gather(1, data.train_labels.view(-1, 1)).squeeze(1) - 0.3 / 100 * log_p.sum(1)).mean()
    loss, _ = training_step(model, data.train_images, data.train_labels, optimizer, setup, setup.grad_scaler())
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert loss.item() != pytest.approx(F.cross_entropy(model[1](clean.flatten(1)), data.train_labels).item(), rel=1e-3)

    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    augmenting = TrainingSetup(parse_settings(["--augment", "--cutout", "8"]), torch.device("cpu"), "fp32")
    training_step(model, data.train_images, data.train_labels, optimizer, augmenting, augmenting.grad_scaler())
    evaluate(model, data.val_images, data.val_labels, augmenting)
    trained_on, evaluated_on = seen
    assert torch.equal(evaluated_on, clean)
    assert not torch.equal(trained_on, clean)
    assert ((trained_on == 0).all(1).sum((1, 2)) >= 16).all()  # a cutout square in every image (at least 4 x 4)
